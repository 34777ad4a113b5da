"""Run the GPU admin page as a JupyterHub service: python -m jupyter_gpuspawn.admin -f
jupyterhub_config.py"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from urllib.parse import urlparse

from ..hubconfig import runtime_dir, spawner_settings, usage_db_url, week_start_spec
from .app import AdminState, make_app


def course_desk(config_file: str):
    """The instructors' desk for the hub's courses_dir (None without one). A wrong instructor_limits
    stops the service with a message naming the key: the hub's log shows it."""
    from ..course_limits import InstructorLimits
    from ..courses import course_files
    from ..datafiles import read_structured_file
    from .desk import CourseDesk

    settings = spawner_settings(config_file)
    courses_dir = settings.get("courses_dir")
    if not courses_dir:
        return None
    offered = [settings.get("image") or ""]
    allowed = settings.get("allowed_images")
    offered += list(allowed.values()) if isinstance(allowed, dict) else []
    for path in course_files(courses_dir):  # images admins already offer in course files
        try:
            offered += [
                i["image"]
                for i in read_structured_file(path, kind="course files").get("images", [])
            ]
        except Exception:
            continue
    data_roots = list(settings.get("course_data_roots") or [])
    limits = InstructorLimits.from_config(
        dict(settings.get("instructor_limits") or {}),
        default_images=tuple(dict.fromkeys(i for i in offered if isinstance(i, str) and i)),
        default_data_roots=tuple(data_roots),
    )
    return CourseDesk(
        courses_dir,
        data_roots,
        limits,
        usage_db_url(config_file),
        creator_groups=settings.get("course_creator_groups") or (),
        defaults=hub_defaults(settings),
    )


def hub_defaults(settings) -> dict:
    """What the hub applies to a course that leaves a capped field out (None: no limit, or not known
    here)."""
    from ..settings import GPUSpawnerSettings

    traits = GPUSpawnerSettings.class_traits()

    def value(name):
        found = (
            settings[name] if name in settings else getattr(traits.get(name), "default_value", None)
        )
        return (
            found if isinstance(found, (int, float, str)) and not isinstance(found, bool) else None
        )

    return {
        "resources.mem_limit": value("mem_limit"),
        "resources.cpu_limit": value("cpu_limit"),
        "resources.shm_size": value("shm_size"),
        "gpus.weekly_hours": value("gpu_hours_per_week"),
        "idle.minutes": value("gpu_idle_minutes"),
    }


async def serve(args):
    try:
        desk = course_desk(args.config)
    except ValueError as e:
        sys.exit(f"jupyter-gpuspawn admin service: c.GPUDockerSpawner.{e}")
    state = AdminState(
        runtime_dir(args.config),
        usage_db_url(args.config),
        week_start_spec(args.config),
        desk,
        spawner_settings(args.config).get("form_template_paths") or (),
    )
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    # forms are small: a 100 MB body (tornado's default) would only tie up the service
    make_app(state, prefix).listen(
        url.port or 80, url.hostname or "127.0.0.1", max_body_size=1 << 20
    )
    await asyncio.Event().wait()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m jupyter_gpuspawn.admin", description=__doc__)
    parser.add_argument("-f", "--config", required=True, help="the hub's jupyterhub_config.py")
    try:
        asyncio.run(serve(parser.parse_args(argv)))
    except KeyboardInterrupt:  # the hub stops its services with SIGINT when it shuts down
        pass


if __name__ == "__main__":
    main()
