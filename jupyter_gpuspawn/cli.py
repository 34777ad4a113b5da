"""The ``jupyter-gpuspawn`` command: admin tools that work without a running hub."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time

from .gpus import INVENTORY_KINDS, GPUInventory, InventoryError, format_size
from .hubconfig import runtime_dir, usage_db_url, week_start_spec
from .hubconfig import spawner_settings as _hub_config


def _inventory_from_args(args) -> GPUInventory:
    settings = _hub_config(args.config)
    kind = args.inventory or settings.get("gpu_inventory", "auto")
    path = args.simulated_gpus or settings.get("simulated_gpus", "")
    if path and not args.inventory and "gpu_inventory" not in settings:
        kind = "simulated"
    if kind == "swarm":
        from .swarm import read_swarm

        return GPUInventory(
            kind, cache_seconds=0, swarm_reader=lambda: read_swarm(_docker_client(settings))
        )
    return GPUInventory(kind, path, cache_seconds=0)


def _docker_client(settings):
    """The hub's Docker engine (a Swarm manager for GPUSwarmSpawner), as its config names it: the
    same order as DockerSpawner's client (tls_config, then DOCKER_* env, then client_kwargs)."""
    import docker

    kwargs = {"version": "auto"}
    if settings.get("tls_config"):
        kwargs["tls"] = docker.tls.TLSConfig(**settings["tls_config"])
    kwargs.update(docker.utils.kwargs_from_env())
    kwargs.update(settings.get("client_kwargs") or {})
    return docker.APIClient(**kwargs)


def _running_assignments(args):
    """(assignments of the servers that hold GPUs, error) read from the labels of containers
    (services on a Swarm)."""
    from .engines import CONTAINERS, SERVICES
    from .hubconfig import load_config, uses_swarm

    settings = _hub_config(args.config)
    engine = SERVICES if uses_swarm(load_config(args.config)) else CONTAINERS
    try:
        return [
            s.assignment for s in engine.list_labelled(_docker_client(settings)) if s.holds_gpus
        ], None
    except Exception as e:  # the docker engine is optional for listing GPUs
        return [], f"cannot read {engine.kind}s from Docker: {e}"


def _runtime_dir(args) -> str:
    return args.runtime_dir or runtime_dir(args.config)


# GPU activity older than this is not the hub's current view (the hub is down, or samples nothing)
ACTIVITY_FRESH_SECONDS = 300


def _idle_by_server(args, now: float):
    """({(user, server): (idle seconds, reclaim deadline or None)}, note) from the hub's GPU
    activity file."""
    from .reclaim import read_activity

    activity = read_activity(_runtime_dir(args))
    updated = activity.get("updated")
    if not isinstance(updated, (int, float)):
        return (
            {},
            "idle times unknown: the hub has written no GPU activity (is it running with GPUs "
            "held?)",
        )
    if now - updated > ACTIVITY_FRESH_SECONDS:
        return (
            {},
            f"idle times unknown: the hub's last GPU sample is {int((now - updated) // 60)} "
            f"minutes old",
        )
    idle = {}
    for entry in (activity.get("servers") or {}).values():
        try:
            key = (str(entry["user"]), str(entry["server"]))
            idle[key] = (max(0.0, now - float(entry["idle_since"])), entry.get("deadline"))
        except (KeyError, TypeError, ValueError):
            continue
    return idle, None


def _idle_text(seconds: float, deadline) -> str:
    text = f"idle {int(seconds // 60)} min"
    if isinstance(deadline, (int, float)):
        text += time.strftime(", reclaim at %H:%M", time.localtime(deadline))
    return text


def cmd_gpus(args) -> int:
    try:
        snapshot = _inventory_from_args(args).read()
    except InventoryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    assignments, docker_error = _running_assignments(args)
    now = time.time()
    idle, idle_note = _idle_by_server(args, now)

    def idle_of(a):
        return idle.get((a.user, a.server))

    holders = {}
    for a in assignments:
        for uuid in a.gpus:
            holders.setdefault(uuid, []).append(a)
    if args.json:
        json.dump(
            {
                "source": snapshot.source,
                "errors": list(snapshot.errors) + ([docker_error] if docker_error else []),
                "gpus": [
                    dict(
                        gpu.to_dict(),
                        held_by=[
                            dict(
                                zip(
                                    ("idle_seconds", "reclaim_deadline"),
                                    idle_of(a) or (None, None),
                                    strict=False,
                                ),
                                user=a.user,
                                server=a.server,
                                policy=a.policy,
                            )
                            for a in holders.get(gpu.uuid, [])
                        ],
                    )
                    for gpu in snapshot.gpus
                ],
            },
            sys.stdout,
            indent=2,
        )
        print()
        return 0
    label = " (simulated)" if snapshot.simulated else ""
    nodes = any(gpu.node for gpu in snapshot.gpus) or snapshot.source == "swarm"
    where = (
        f"on {len(snapshot.nodes)} Swarm nodes" if snapshot.source == "swarm" else "on this host"
    )
    print(f"GPUs {where}{label}: {len(snapshot.gpus)}")
    rows = [("NODE",) * nodes + ("IDX", "UUID", "NAME", "MEMORY USED", "HELD BY")]
    for gpu in snapshot.gpus:
        held = ", ".join(
            f"{a.user}"
            + (f"/{a.server}" if a.server else "")
            + (" (shared)" if a.policy == "shared" else "")
            + (f" ({_idle_text(*idle_of(a))})" if idle_of(a) else "")
            for a in holders.get(gpu.uuid, [])
        )
        rows.append(
            (gpu.node or "-",) * nodes
            + (
                str(gpu.index),
                gpu.uuid,
                gpu.label,
                f"{format_size(gpu.memory_used)} / {format_size(gpu.memory_total)}",
                held or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())
    known = {gpu.uuid for gpu in snapshot.gpus}
    for uuid, held in holders.items():
        if uuid not in known:
            node = next((a.node for a in held if a.node), "")
            why = (
                f"its node {node} offers nothing now (down, drained or gone)"
                if node
                else "is not in the inventory"
            )
            print(f"note: {uuid} is held by {', '.join(a.user for a in held)} but {why}")
    for node in snapshot.nodes:
        if not node.offers:
            print(
                f"note: node {node.hostname} is {node.state}/{node.availability}: it takes no new "
                f"servers"
            )
    if holders and idle_note:
        print(f"note: {idle_note}")
    for error in list(snapshot.errors) + ([docker_error] if docker_error else []):
        print(f"warning: {error}", file=sys.stderr)
    return 0


def configured_images(settings) -> list:
    """Every image a hub with these settings can start: the default image, the allowed ones and
    those of the course files (with courses_dir set, they are what students choose from)."""
    from dockerspawner import DockerSpawner

    from .courses import CourseCatalog

    found = [settings.get("image") or DockerSpawner.image.default_value]
    allowed = settings.get("allowed_images") or {}
    if isinstance(allowed, dict):
        found += list(allowed.values())
    elif isinstance(allowed, (list, tuple)):
        found += list(allowed)
    if settings.get("courses_dir"):
        # a course file with problems is left out here; `jupyter-gpuspawn validate` names them
        roots = settings.get("course_data_roots", ())
        view = CourseCatalog(settings["courses_dir"], roots).refresh()
        found += [image.image for course in view.courses for image in course.images]
    return list(dict.fromkeys(found))


def cmd_images(args) -> int:
    from . import images

    settings = _hub_config(args.config)
    wanted = args.image or configured_images(settings)
    try:
        client = _docker_client(settings)
        statuses = [images.inspect_readiness(client, image) for image in wanted]
    except Exception as e:
        print(f"error: cannot read images from Docker: {e}", file=sys.stderr)
        return 2
    hub_version = images.hub_jupyterhub_version()
    if args.json:
        json.dump(
            [dict(s.__dict__, build_command=images.build_command(s.image)) for s in statuses],
            sys.stdout,
            indent=2,
        )
        print()
    else:
        rows = [("IMAGE", "PRESENT", "HUB-READY", "SIZE", "JUPYTERHUB")]
        for s in statuses:
            version = s.jupyterhub_version or ("?" if s.ready else "-")
            if images.version_mismatch(s.jupyterhub_version, hub_version):
                version += f" (hub: {hub_version})"
            rows.append(
                (
                    s.image,
                    "yes" if s.present else "NO",
                    "yes" if s.ready else "NO",
                    format_size(s.size) if s.size else "-",
                    version,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())
        for s in statuses:
            if not s.present:
                print(
                    f"\n{s.image} is missing: docker load it, or build it with\n  "
                    f"{images.build_command(s.image)}"
                )
            elif not s.ready:
                print(
                    f"\n{s.image} cannot run a hub server; make it ready with\n  "
                    f"{images.build_command(s.image)}"
                )
    return 0 if all(s.present and s.ready for s in statuses) else 1


def cmd_validate(args) -> int:
    from .courses import validate_directory

    settings = _hub_config(args.config)
    directory = args.directory or settings.get("courses_dir")
    if not directory:
        print(
            "error: give a course directory, or -f a config that sets GPUDockerSpawner.courses_dir",
            file=sys.stderr,
        )
        return 2
    roots = args.data_root or settings.get("course_data_roots", [])
    if not os.path.isdir(directory):
        print(f"error: {directory} is not a directory", file=sys.stderr)
        return 2
    # the catalog also logs each problem (for the hub's log); here they are printed once, below
    logging.getLogger("jupyter_gpuspawn.courses").disabled = True
    problems = validate_directory(directory, roots)
    for problem in problems:
        print(problem)
    from .courses import course_files

    count = len(course_files(directory))
    print(f"{count} course file(s) checked, {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


def cmd_build_image(args) -> int:
    from . import images
    from .wheels import WheelError

    try:
        images.check_image_reference(args.base, "--base")
        if args.dockerfile_only:
            print(
                images.dockerfile(
                    args.base,
                    images.hub_jupyterhub_version(),
                    wheel_name="jupyter_gpuspawn.whl",
                    ca_bundle=bool(args.ca_bundle),
                    install_python=args.install_python,
                    keep_rfc3987_syntax=args.keep_rfc3987_syntax,
                )
            )
            return 0
        return images.build_image(
            args.base,
            args.tag,
            wheel=args.wheel,
            ca_bundle=args.ca_bundle,
            build_args=args.build_arg,
            labels=args.label,
            network=args.network,
            install_python=args.install_python,
            keep_rfc3987_syntax=args.keep_rfc3987_syntax,
        )
    # a bad --base, or no wheel to install: one line, no traceback
    except (ValueError, WheelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a missing --wheel or --ca-bundle file, no docker command
        print(f"error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2


def _usage_db(args, create: bool):
    from .usage import UsageDB

    return UsageDB(args.db or usage_db_url(args.config), create=create)


def _parse_since(text: str) -> float:
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(text).timestamp()  # local time unless it names a zone
    except ValueError:
        print(
            f"error: --since must be a date like 2026-11-23 or 2026-11-23T08:00, got {text!r}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


def cmd_usage(args) -> int:
    import csv

    from .budget import WeekStartError, describe, week_start

    now = time.time()
    try:
        spec = week_start_spec(args.config)
        since = _parse_since(args.since) if args.since else week_start(now, spec)
    except WeekStartError as e:
        print(f"error: gpu_budget_week_start: {e}", file=sys.stderr)
        return 2
    try:
        db = _usage_db(args, create=False)
    except Exception as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        rows = db.totals(since, now, course=args.course)
    except Exception as e:
        print(f"error: cannot read the usage records at {db.url}: {e}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    if args.format == "json":
        json.dump({"since": since, "until": now, "rows": rows}, sys.stdout, indent=2)
        print()
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["user", "course", "gpu_hours"])
        for row in rows:
            writer.writerow([row["user"], row["course"], f"{row['gpu_hours']:.4f}"])
    else:
        print(
            f"GPU-hours since {time.strftime('%Y-%m-%d %H:%M', time.localtime(since))}"
            + ("" if args.since else f" (this week, from {describe(since)})")
        )
        table = [("USER", "COURSE", "GPU-HOURS")] + [
            (r["user"], r["course"] or "-", f"{r['gpu_hours']:.2f}") for r in rows
        ]
        widths = [max(len(r[i]) for r in table) for i in range(3)]
        for r in table:
            print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=False)).rstrip())
        if not rows:
            print("(no GPU use recorded)")
    return 0


def _grant_course_problem(args) -> str:
    """Budgets are per course on a hub with course files, one per user without: a grant elsewhere is
    never read."""
    from .courses import CourseCatalog

    settings = _hub_config(args.config) if args.config else {}
    courses_dir = settings.get("courses_dir")
    if not courses_dir:
        return (
            f"this hub has no course files: leave out --course {args.course}"
            if args.config and args.course
            else ""
        )
    known = sorted(
        c.id
        for c in CourseCatalog(courses_dir, settings.get("course_data_roots", ())).refresh().courses
    )
    if not args.course:
        return (
            f"this hub's budgets are per course: add --course (one of {', '.join(known) or 'none'})"
        )
    if args.course not in known:
        return f"no course {args.course!r} in {courses_dir} (known: {', '.join(known) or 'none'})"
    return ""


def cmd_grant(args) -> int:
    import getpass

    from .budget import WeekStartError, describe, next_week_start, week_start

    now = time.time()
    try:
        spec = week_start_spec(args.config)
        start = week_start(now, spec)
    except WeekStartError as e:
        print(f"error: gpu_budget_week_start: {e}", file=sys.stderr)
        return 2
    # float() takes "inf" and "nan": an endless grant would lift the budget for good
    if not (math.isfinite(args.hours) and args.hours > 0):
        print(
            f"error: HOURS must be a finite number of hours more than 0, got {args.hours:g}",
            file=sys.stderr,
        )
        return 2
    if not (args.config or args.db):
        # a guess at the database would write a grant the hub never reads
        print(
            "error: say where the hub keeps its records: -f /path/to/jupyterhub_config.py (or "
            "--db URL)",
            file=sys.stderr,
        )
        return 2
    problem = _grant_course_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    db = _usage_db(args, create=True)
    try:
        db.grant(
            args.user,
            args.hours,
            start,
            args.by or getpass.getuser(),
            now,
            course=args.course or "",
        )
        total = db.granted_hours(args.user, start, next_week_start(now, spec), args.course or "")
    except Exception as e:
        print(f"error: cannot write the usage records at {db.url}: {e}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    where = f"course {args.course}" if args.course else "the hub-wide budget"
    print(
        f"{args.user}: {args.hours:g} extra GPU-hours in {where} this week ({total:g} granted in "
        f"all), until "
        f"{describe(next_week_start(now, spec))}"
    )
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="jupyter-gpuspawn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gpus = sub.add_parser("gpus", help="list this host's GPUs and which user/server holds each")
    gpus.add_argument(
        "-f", "--config", help="read gpu_inventory/simulated_gpus from this jupyterhub_config.py"
    )
    gpus.add_argument(
        "--inventory", choices=INVENTORY_KINDS, help="GPU source (default: auto, or the config's)"
    )
    gpus.add_argument(
        "--simulated-gpus", help="file of simulated GPUs (implies --inventory simulated)"
    )
    gpus.add_argument(
        "--runtime-dir", help="the hub's runtime_dir, for idle times (default: the config's)"
    )
    gpus.add_argument("--json", action="store_true", help="print JSON")
    gpus.set_defaults(func=cmd_gpus)

    usage = sub.add_parser(
        "usage", help="GPU-hours per user and course, from the hub's usage records"
    )
    usage.add_argument(
        "-f", "--config", help="the hub's jupyterhub_config.py (usage_db_url, the budget week)"
    )
    usage.add_argument(
        "--db", help="SQLAlchemy URL of the usage records (default: the config's usage_db_url)"
    )
    usage.add_argument(
        "--since", help="from this local date/time, e.g. 2026-11-23 (default: this budget week)"
    )
    usage.add_argument("--course", help="only this course id")
    usage.add_argument("--format", choices=("table", "csv", "json"), default="table")
    usage.set_defaults(func=cmd_usage)

    grant = sub.add_parser("grant", help="give a user extra GPU-hours for this budget week")
    grant.add_argument("user", help="JupyterHub user name")
    grant.add_argument("hours", type=float, help="extra GPU-hours (fractions allowed)")
    grant.add_argument(
        "--course",
        help="the course id whose budget grows (default: the spawner-wide budget of a "
        "hub without course files)",
    )
    grant.add_argument(
        "-f", "--config", help="the hub's jupyterhub_config.py (usage_db_url, the budget week)"
    )
    grant.add_argument(
        "--db", help="SQLAlchemy URL of the usage records (default: the config's usage_db_url)"
    )
    grant.add_argument(
        "--by", help="who grants it, for the record (default: the login running this command)"
    )
    grant.set_defaults(func=cmd_grant)

    val = sub.add_parser(
        "validate", help="check course files; prints every problem, exits non-zero if any"
    )
    val.add_argument(
        "directory", nargs="?", help="course directory (default: the config's courses_dir)"
    )
    val.add_argument(
        "-f", "--config", help="the hub's jupyterhub_config.py (courses_dir, course_data_roots)"
    )
    val.add_argument(
        "--data-root", action="append", help="allowed root for course mounts (repeatable)"
    )
    val.set_defaults(func=cmd_validate)

    imgs = sub.add_parser(
        "images", help="check every image the hub can start: present, hub-ready, size, version"
    )
    imgs.add_argument("-f", "--config", help="the hub's jupyterhub_config.py")
    imgs.add_argument("--image", action="append", help="check this image instead (repeatable)")
    imgs.add_argument("--json", action="store_true", help="print JSON")
    imgs.set_defaults(func=cmd_images)

    build = sub.add_parser(
        "build-image", help="derive a hub-ready image from a base image with Python"
    )
    build.add_argument(
        "--base", required=True, help="base image, e.g. nvcr.io/nvidia/pytorch:24.08-py3"
    )
    build.add_argument(
        "--tag", help="name:tag of the image to build (required, unless --dockerfile-only)"
    )
    build.add_argument(
        "--wheel", help="install this jupyter-gpuspawn wheel instead of building one"
    )
    build.add_argument(
        "--ca-bundle", help="extra CA bundle for sites behind a TLS-inspecting proxy"
    )
    build.add_argument(
        "--build-arg", action="append", default=[], help="passed to docker build (repeatable)"
    )
    build.add_argument(
        "--label", action="append", default=[], help="extra image label KEY=VALUE (repeatable)"
    )
    build.add_argument("--network", help="network for the build, e.g. host")
    build.add_argument(
        "--install-python",
        action="store_true",
        help=(
            "if the base has no Python (CUDA runtime, r-base), install it with its package manager"
        ),
    )
    build.add_argument(
        "--keep-rfc3987-syntax",
        action="store_true",
        help="keep jsonschema's IRI-format validator in the image's venv; by default it is removed "
        "because importing it costs every server start ~1.7 s of CPU (see config/images.md)",
    )
    build.add_argument(
        "--dockerfile-only", action="store_true", help="print the Dockerfile and exit"
    )
    build.set_defaults(func=cmd_build_image)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "build-image" and not args.dockerfile_only and not args.tag:
        parser.error("build-image needs --tag NAME:TAG (or --dockerfile-only)")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
