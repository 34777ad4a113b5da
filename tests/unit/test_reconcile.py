"""The reconcile's decisions (which holds survive a rebuild, which containers go), against a
scripted container list. The real engine path is tested in tests/integration/test_release.py."""

from __future__ import annotations

import asyncio
import json
import logging
import os

import pytest

from jupyter_gpuspawn.allocation import GPUAllocator, GPURequest
from jupyter_gpuspawn.gpus import GPU
from jupyter_gpuspawn.reconcile import (
    LabelledContainer,
    Reconciler,
    list_labelled,
    remove_container,
)
from jupyter_gpuspawn.spec import GPUAssignment

INVENTORY = [GPU(index=i, uuid=f"GPU-{i}", name="sim", memory_total=1) for i in range(3)]
log = logging.getLogger("test")


def container(cid, user, gpus, state="running"):
    return LabelledContainer(cid, state, GPUAssignment(user=user, server="", gpus=tuple(gpus)))


class Engine:
    """Stands in for the executor call: serves a container list, records removals."""

    def __init__(self, containers, fail_removal=()):
        self.containers = containers
        self.removed = []
        self.fail_removal = set(fail_removal)
        # runs while the list is "in flight", like a spawn finishing meanwhile
        self.during_list = None

    async def __call__(self, func, *args):
        if func is list_labelled:
            if self.during_list:
                self.during_list()
            return list(self.containers)
        assert func is remove_container
        if args[0] in self.fail_removal:
            raise RuntimeError("dockerd is restarting")
        self.removed.append(args[0])
        self.containers = [c for c in self.containers if c.id != args[0]]


def run(reconciler, engine):
    return asyncio.run(reconciler.run_once(engine, log))


def test_gpus_of_a_vanished_container_are_freed_and_unknown_holders_adopted():
    alloc = GPUAllocator()
    alloc.allocate(GPURequest("gone", count=1), INVENTORY)
    reconciler = Reconciler(alloc)
    report = run(reconciler, Engine([container("c1", "stranger", ["GPU-2"])]))
    assert alloc.assignment("gone") == () and report.freed == [(("gone", ""), ("GPU-0",))]
    assert alloc.assignment("stranger") == ("GPU-2",) and report.adopted == [
        (("stranger", ""), ("GPU-2",))
    ]


def test_a_start_in_flight_keeps_its_gpus_without_a_container():
    alloc = GPUAllocator()
    alloc.allocate(GPURequest("starting", count=1), INVENTORY)
    reconciler = Reconciler(alloc)
    reconciler.starting.add(("starting", ""))
    run(reconciler, Engine([]))
    assert alloc.assignment("starting") == ("GPU-0",)


def test_changes_made_while_the_list_was_read_win_over_the_list():
    alloc = GPUAllocator()
    alloc.allocate(GPURequest("stopping", count=1), INVENTORY)
    reconciler = Reconciler(alloc)
    engine = Engine([container("c1", "stopping", ["GPU-0"])])

    def meanwhile():
        alloc.release("stopping")  # its stop finished after the list was taken
        # a start began and finished meanwhile
        alloc.allocate(GPURequest("fast", count=1), INVENTORY)

    engine.during_list = meanwhile
    run(reconciler, engine)
    assert alloc.assignment("stopping") == ()  # not resurrected from the stale list
    assert alloc.assignment("fast") != ()  # not dropped for lack of a container in the stale list


def test_containers_left_created_are_removed_unless_their_start_is_in_flight():
    alloc = GPUAllocator()
    reconciler = Reconciler(alloc)
    reconciler.starting.add(("busy", ""))
    engine = Engine(
        [
            container("left", "crashed-hub", ["GPU-0"], "created"),
            container("mine", "busy", ["GPU-1"], "created"),
        ]
    )
    run(reconciler, engine)
    assert engine.removed == ["left"]
    assert alloc.assignment("crashed-hub") == ()


def test_a_failed_stop_keeps_the_hold_until_the_container_is_removed():
    alloc = GPUAllocator()
    alloc.allocate(GPURequest("stuck", count=1), INVENTORY)
    reconciler = Reconciler(alloc)
    reconciler.removals["c9"] = ("stuck", "")
    engine = Engine([container("c9", "stuck", ["GPU-0"])], fail_removal={"c9"})
    run(reconciler, engine)
    assert alloc.assignment("stuck") == ("GPU-0",) and "c9" in reconciler.removals
    engine.fail_removal.clear()  # dockerd answers again
    run(reconciler, engine)
    assert engine.removed == ["c9"] and alloc.assignment("stuck") == () and not reconciler.removals


def test_paused_containers_hold_their_gpus_and_exited_ones_do_not():
    alloc = GPUAllocator()
    run(
        Reconciler(alloc),
        Engine(
            [
                container("p", "paused", ["GPU-0"], "paused"),
                container("x", "exited", ["GPU-1"], "exited"),
            ]
        ),
    )
    assert alloc.assignment("paused") == ("GPU-0",) and alloc.assignment("exited") == ()


# ---- pending removals outlive the hub process ----------------------------------------------------
def reconciler_in(runtime_dir, alloc=None, owner="GPUDockerSpawner"):
    return Reconciler(alloc or GPUAllocator(), runtime_dir=str(runtime_dir), owner=owner, log=log)


def saved(reconciler) -> dict:
    reconciler.removals.flush(10)
    with open(reconciler.removals.path, encoding="utf-8") as f:
        return json.load(f)["removals"]


def test_a_pending_removal_survives_a_hub_restart_and_goes_once_done(tmp_path):
    before = reconciler_in(tmp_path)
    before.removals["c9"] = ("stuck", "")
    before.removals.setdefault("c8", ("exited", "named"))
    assert saved(before) == {"c9": ["stuck", ""], "c8": ["exited", "named"]}
    assert oct(os.stat(before.removals.path).st_mode & 0o777) == "0o600"

    # a new hub process: dockerd still restarting at its first reconcile
    alloc = GPUAllocator()
    after = reconciler_in(tmp_path, alloc)
    assert dict(after.removals) == {"c9": ("stuck", ""), "c8": ("exited", "named")}
    engine = Engine(
        [container("c9", "stuck", ["GPU-0"]), container("c8", "exited", [], "exited")],
        fail_removal={"c9"},
    )
    run(after, engine)
    assert engine.removed == ["c8"] and saved(after) == {"c9": ["stuck", ""]}
    # its GPUs stay held while it may run, but only until it is gone: never adopted for good
    assert alloc.assignment("stuck") == ("GPU-0",)
    engine.fail_removal.clear()
    run(after, engine)
    assert engine.removed == ["c8", "c9"] and alloc.assignment("stuck") == ()
    assert saved(after) == {} and not reconciler_in(tmp_path).removals


def test_each_spawner_class_keeps_its_own_pending_removals(tmp_path):
    docker = reconciler_in(tmp_path, owner="GPUDockerSpawner")
    docker.removals["c1"] = ("ann", "")
    docker.removals.flush(10)
    # a Swarm class beside it must neither remove (with its engine) nor drop the other's containers
    assert not reconciler_in(tmp_path, owner="GPUSwarmSpawner").removals
    assert dict(reconciler_in(tmp_path, owner="GPUDockerSpawner").removals) == {"c1": ("ann", "")}


def test_the_spawner_keeps_its_pending_removals_in_its_runtime_dir(tmp_path):
    from types import SimpleNamespace

    from jupyter_gpuspawn.spawner import GPUDockerSpawner

    class FreshSpawner(GPUDockerSpawner):  # a hub state of its own, not the other tests'
        pass

    user = SimpleNamespace(name="alice", url="/user/alice/", id=1, escaped_name="alice")
    spawner = FreshSpawner(user=user, runtime_dir=str(tmp_path))
    removals = spawner._shared.reconciler.removals
    assert removals.path == str(tmp_path / "pending-removals-FreshSpawner.json")
    removals["c1"] = spawner.server_key
    removals.flush(10)
    del FreshSpawner._hub_process_state  # the hub restarts
    again = FreshSpawner(user=user, runtime_dir=str(tmp_path))
    assert dict(again._shared.reconciler.removals) == {"c1": ("alice", "")}


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe garbage",
        b"[]",
        b'{"version": 1}',
        b'{"version": 2, "removals": {}}',
        b'{"version": 1, "removals": {"c1": "alice"}}',
        b'{"version": 1, "removals": {"c1": "ab"}}',
        b'{"version": 1, "removals": {"": ["alice", ""]}}',
        b'{"version": 1, "removals": {"c1": ["alice", 3]}}',
        b'{"version": 1, "removals": []}',
    ],
)
def test_a_corrupt_file_is_logged_and_counts_as_empty(tmp_path, caplog, content):
    path = tmp_path / "pending-removals-GPUDockerSpawner.json"
    path.write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="test"):
        reconciler = reconciler_in(tmp_path)
    assert not reconciler.removals
    assert any(str(path) in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    # the hub goes on: the next change replaces the file with a good one
    reconciler.removals["c2"] = ("bob", "")
    assert saved(reconciler) == {"c2": ["bob", ""]}


def test_an_unreadable_runtime_dir_is_logged_and_the_removals_still_hold(tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with caplog.at_level(logging.ERROR, logger="test"):
        reconciler = reconciler_in(blocker)  # the file would be below a regular file
        reconciler.removals["c1"] = ("ann", "")
        reconciler.removals.flush(10)
    assert dict(reconciler.removals) == {"c1": ("ann", "")}
    assert any("cannot save" in r.getMessage() for r in caplog.records)


def test_only_changes_are_written(tmp_path):
    reconciler = reconciler_in(tmp_path)
    # what a confirmed stop does every time: nothing pending, nothing written
    reconciler.removals.pop("c1", None)
    assert "c1" not in reconciler.removals and reconciler.removals._last_write is None
    assert not os.path.exists(reconciler.removals.path)
    reconciler.removals["c1"] = ("ann", "")
    first = reconciler.removals._last_write
    reconciler.removals["c1"] = ("ann", "")  # already so
    assert reconciler.removals._last_write is first
    del reconciler.removals["c1"]
    assert saved(reconciler) == {}


def test_many_changes_end_on_disk_in_order(tmp_path):
    reconciler = reconciler_in(tmp_path)
    for i in range(200):
        reconciler.removals[f"c{i}"] = ("u", str(i))
        if i % 3 == 0:
            reconciler.removals.pop(f"c{i}")
    assert saved(reconciler) == {f"c{i}": ["u", str(i)] for i in range(200) if i % 3}
    assert [p.name for p in tmp_path.iterdir()] == ["pending-removals-GPUDockerSpawner.json"]
