"""The reconcile's decisions (which holds survive a rebuild, which containers go), against a
scripted container list. The real engine path is tested in tests/integration/test_release.py."""

from __future__ import annotations

import asyncio
import logging

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
