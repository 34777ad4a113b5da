"""The spawner's own state and the admin settings it reads when it creates a container (the
container spec itself: test_plan.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from types import SimpleNamespace

from jupyter_gpuspawn.homes import Identity
from jupyter_gpuspawn.spawner import GPUDockerSpawner
from jupyter_gpuspawn.spec import GPUAssignment


def make_spawner(**config):
    user = SimpleNamespace(name="alice", url="/user/alice/", id=1, escaped_name="alice")
    spawner = GPUDockerSpawner(user=user, **config)
    spawner._assignment = GPUAssignment("alice", "", ("GPU-1",), course="dl", image_key="pt")
    spawner._identity = Identity(200001, 200001, "range")
    spawner._host_home = "/srv/home/alice"
    return spawner


def test_async_callable_admin_settings_are_read_at_create_time():
    async def host(spawner):
        return {"shm_size": "4g"}

    spawner = make_spawner(extra_host_config=host)
    assert asyncio.run(spawner._admin_value(spawner.extra_host_config)) == {"shm_size": "4g"}
    assert spawner.extra_host_config is host  # the admin's setting is never replaced by the spawner


def test_state_round_trip():
    spawner = make_spawner()
    spawner.object_id = "abc"
    state = spawner.get_state()
    fresh = make_spawner()
    fresh._assignment = None
    fresh.load_state(state)
    assert fresh._assignment == spawner._assignment
    assert fresh._identity.uid == 200001


def test_load_state_keeps_the_persisted_container_name():
    spawner = make_spawner()
    spawner.object_id = "abc"
    spawner.object_name = "renamed-by-an-old-template"
    state = spawner.get_state()
    fresh = make_spawner()
    fresh.load_state(state)
    assert fresh.object_name == "renamed-by-an-old-template"
    assert fresh.image == state["gpuspawn"]["image"]


def test_each_spawner_class_has_its_own_hub_state_shared_by_its_instances():
    class OtherEngine(GPUDockerSpawner):
        pass

    a, b = make_spawner(), make_spawner()
    other = OtherEngine(user=a.user, busy_gpu_memory_threshold="2G")
    assert a.allocator is b.allocator and a._shared.waitroom is b._shared.waitroom
    assert other.allocator is not a.allocator and other._shared.waitroom is not a._shared.waitroom
    # the admin's threshold for GPUs busy outside the hub is read once, from the config, not written
    # per access
    assert other.allocator.foreign_memory_threshold == 2 * 1024**3
    # and its own GPU source: a Swarm spawner class beside a one-host one reads its own inventory
    a.gpu_inventory = b.gpu_inventory = other.gpu_inventory = "none"
    assert a.inventory is b.inventory and other.inventory is not a.inventory
    # a profile's own setting (ProfilesSpawner, a pre_spawn_hook) gets its own source
    b.gpu_inventory = "auto"
    assert b.inventory is not a.inventory and b.inventory.kind == "auto"


def test_swarm_spawner_state_is_its_own_and_reads_the_nodes():
    from jupyter_gpuspawn.swarmspawner import GPUSwarmSpawner

    user = SimpleNamespace(name="alice", url="/user/alice/", id=1, escaped_name="alice")
    swarm = GPUSwarmSpawner(user=user)
    assert swarm.gpu_inventory == "swarm" and swarm.inventory.kind == "swarm"
    assert swarm.allocator is not make_spawner().allocator
    assert swarm.engine.kind == "service" and swarm.network_name == "" and not swarm.use_internal_ip


def test_spawn_options_that_are_not_an_object_are_refused_with_400_in_start():
    """JupyterHub 5 puts a spawn request's JSON body into user_options as it is, a list or a string
    too (and makes the spawner from the saved value on its next start). Assigning it must not raise
    (that is a 500 outside the spawn's clean-up, leaving a server record that cannot be stopped):
    start() refuses it with 400, like any bad option."""
    from jupyter_gpuspawn.errors import SpawnRefused
    from jupyter_gpuspawn.gpus import Snapshot

    for body in ([1, 2], "gpus=1", 7):
        spawner = make_spawner(user_options=body)
        try:
            asyncio.run(spawner._validate_user_options(Snapshot(source="none")))
        except SpawnRefused as e:
            assert e.status_code == 400 and "JSON object" in str(e), e
        else:
            raise AssertionError(f"{body!r} was accepted")
    assert make_spawner().user_options == {}


def course_file(directory, weekly_hours=20, broken=False):
    text = (
        "id: dl\ntitle: Deep Learning\nimages: [{key: pt, image: 'img:1'}]\n"
        f"gpus: {{default: 1, max: 1, weekly_hours: {weekly_hours}}}\n"
        "idle: {minutes: 90, reclaim: never}\n"
    )
    path = directory / "dl.yaml"
    path.write_text(text + ("gpus: [\n" if broken else ""))
    # a new mtime each write, whatever the file system's resolution
    stamp = 1_700_000_000 + weekly_hours + (1000 if broken else 0)
    os.utime(path, (stamp, stamp))


def test_a_running_server_keeps_its_course_rules_when_the_course_is_gone_after_a_restart(
    tmp_path, caplog
):
    """The course file turns invalid, then the hub restarts (a new process: a catalog that never
    saw the good version): the running server is judged by its course's rules, from its state,
    not by the spawner's settings (here 5 GPU-hours and when_queued)."""
    courses = tmp_path / "courses"
    courses.mkdir()
    course_file(courses)
    config = dict(
        courses_dir=str(courses),
        gpu_hours_per_week=5,
        gpu_idle_reclaim="when_queued",
        gpu_idle_minutes=30,
        usage_db_url=f"sqlite:///{tmp_path}/usage.sqlite",
    )

    class Before(GPUDockerSpawner):  # one hub process ...
        pass

    class After(GPUDockerSpawner):  # ... and the next one: each class has its own hub state
        pass

    user = SimpleNamespace(name="alice", url="/user/alice/", id=1, escaped_name="alice")
    spawner = Before(user=user, **config)
    spawner._assignment = GPUAssignment("alice", "", ("GPU-1",), course="dl", image_key="pt")
    # what start() keeps of the course it starts in
    [live] = asyncio.run(spawner._catalog().get()).courses
    spawner._kept_rules = live.kept_rules()
    state = json.loads(json.dumps(spawner.get_state()))

    course_file(courses, broken=True)
    restarted = After(user=user, **config)
    restarted.load_state(state)
    with caplog.at_level(logging.WARNING):
        course = asyncio.run(restarted._running_course())
        assert asyncio.run(restarted._running_course()) == course
    assert course.weekly_hours == 20 and course.title == "Deep Learning"
    policy = asyncio.run(restarted.idle_policy(course))
    assert (policy.reclaim, policy.minutes) == ("never", 90)
    budget = asyncio.run(restarted._budget_state(course, "dl"))
    assert budget.hours == 20 and "Deep Learning" in budget.warning()
    # said once per server, not every reclaim round
    said = [r.getMessage() for r in caplog.records if "keeps the rules" in r.getMessage()]
    assert len(said) == 1 and "'dl'" in said[0], said

    # the file is fixed, with a new budget: the live version wins again, for running servers too
    course_file(courses, weekly_hours=30)
    restarted._shared.catalogs.clear()  # no need to wait out the catalog's cache
    assert asyncio.run(restarted._running_course()).weekly_hours == 30

    # a course removed (or renamed) while the server runs: its start-time rules again
    (courses / "dl.yaml").unlink()
    restarted._shared.catalogs.clear()
    assert asyncio.run(restarted._running_course()).weekly_hours == 20

    # a server started before rules were kept: the spawner's settings, as before
    old = json.loads(json.dumps(state))
    del old["gpuspawn"]["course_rules"]
    course_file(courses, broken=True)
    older = After(user=user, **config)
    older.load_state(old)
    older._shared.catalogs.clear()
    assert asyncio.run(older._running_course()) is None
    assert asyncio.run(older.idle_policy(None)).reclaim == "when_queued"

    # a stop forgets them: the next start keeps its own
    restarted.clear_state()
    assert "course_rules" not in restarted.get_state().get("gpuspawn", {})
    assert restarted._kept_rules is None
