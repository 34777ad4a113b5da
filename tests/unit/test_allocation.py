from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_gpuspawn.allocation import GiB, GPUAllocator, GPURequest, NoGPUAvailable, UserGPULimit
from jupyter_gpuspawn.gpus import GPU


def gpus(n, **overrides):
    return [
        GPU(uuid=f"GPU-{i}", index=i, name="Test GPU", memory_total=80 * GiB, **overrides)
        for i in range(n)
    ]


def test_exclusive_hands_each_gpu_to_one_server():
    alloc = GPUAllocator()
    inventory = gpus(2)
    a = alloc.allocate(GPURequest("a", count=1), inventory)
    b = alloc.allocate(GPURequest("b", count=1), inventory)
    assert a != b and set(a + b) == {"GPU-0", "GPU-1"}
    with pytest.raises(NoGPUAvailable, match="All 2 GPUs are in use"):
        alloc.allocate(GPURequest("c", count=1), inventory)


def test_release_frees_the_gpu():
    alloc = GPUAllocator()
    inventory = gpus(1)
    alloc.allocate(GPURequest("a", count=1), inventory)
    assert alloc.release("a") == ("GPU-0",)
    assert alloc.allocate(GPURequest("b", count=1), inventory) == ("GPU-0",)


def test_zero_gpus_holds_nothing():
    alloc = GPUAllocator()
    assert alloc.allocate(GPURequest("a", count=0), gpus(1)) == ()
    assert alloc.assignments() == {}


def test_messages_say_what_to_do():
    alloc = GPUAllocator()
    with pytest.raises(NoGPUAvailable, match="no GPUs.*CPU-only"):
        alloc.allocate(GPURequest("a", count=1), [])
    with pytest.raises(NoGPUAvailable, match="only 2"):
        alloc.allocate(GPURequest("a", count=3), gpus(2))
    alloc.allocate(GPURequest("a", count=1), gpus(2))
    with pytest.raises(NoGPUAvailable, match="Only 1 of 2 GPUs is free and you asked for 2"):
        alloc.allocate(GPURequest("b", count=2), gpus(2))


def test_shared_policy_packs_up_to_max_users_and_never_mixes_with_exclusive():
    alloc = GPUAllocator()
    inventory = gpus(1)
    shared = dict(count=1, policy="shared", max_users_per_gpu=2)
    assert alloc.allocate(GPURequest("a", **shared), inventory) == ("GPU-0",)
    assert alloc.allocate(GPURequest("b", **shared), inventory) == ("GPU-0",)
    with pytest.raises(NoGPUAvailable):
        alloc.allocate(GPURequest("c", **shared), inventory)
    alloc.release("b")
    with pytest.raises(NoGPUAvailable, match="The only GPU is in use"):
        alloc.allocate(GPURequest("d", count=1), inventory)  # exclusive cannot join a shared GPU


def test_shared_packs_onto_shared_gpus_to_keep_whole_gpus_free():
    alloc = GPUAllocator()
    inventory = gpus(2)
    shared = dict(count=1, policy="shared", max_users_per_gpu=2)
    first = alloc.allocate(GPURequest("a", **shared), inventory)
    second = alloc.allocate(GPURequest("b", **shared), inventory)
    assert first == second  # the second seat goes next to the first
    assert alloc.allocate(GPURequest("c", count=1), inventory) != first  # a whole GPU is still free


def test_least_loaded_gpu_first():
    alloc = GPUAllocator()
    inventory = [
        GPU("GPU-busy", 0, "x", 80 * GiB, memory_used=512 * 1024**2, utilization_pct=90),
        GPU("GPU-idle", 1, "x", 80 * GiB, memory_used=0, utilization_pct=0),
    ]
    assert alloc.allocate(GPURequest("a", count=1), inventory) == ("GPU-idle",)


def test_gpus_busy_outside_the_hub_are_avoided():
    alloc = GPUAllocator(foreign_memory_threshold=GiB)
    inventory = [
        GPU("GPU-foreign", 0, "x", 80 * GiB, memory_used=20 * GiB),
        GPU("GPU-proc", 1, "x", 80 * GiB, process_count=1),
        GPU("GPU-free", 2, "x", 80 * GiB),
    ]
    assert alloc.allocate(GPURequest("a", count=1), inventory) == ("GPU-free",)
    with pytest.raises(NoGPUAvailable, match="2 busy with work outside JupyterHub"):
        alloc.allocate(GPURequest("b", count=1), inventory)


def test_per_user_cap_counts_all_named_servers():
    alloc = GPUAllocator()
    inventory = gpus(4)
    alloc.allocate(GPURequest("a", "one", count=2, user_limit=2), inventory)
    with pytest.raises(UserGPULimit, match="already hold 2 GPUs"):
        alloc.allocate(GPURequest("a", "two", count=1, user_limit=2), inventory)
    assert alloc.allocate(GPURequest("a", "two", count=0, user_limit=2), inventory) == ()
    assert set(alloc.allocate(GPURequest("b", count=2, user_limit=2), inventory)) == {
        "GPU-2",
        "GPU-3",
    }
    alloc.release("b")
    with pytest.raises(UserGPULimit, match="limit is 2 GPUs per user"):
        alloc.allocate(GPURequest("c", count=3, user_limit=2), inventory)
    # the limit is the request's: another spawner's request without one is not capped by it
    assert len(alloc.allocate(GPURequest("c", count=2), inventory)) == 2


def test_user_and_server_names_cannot_collide():
    # user "a-b" and user "a"'s server "b" are different servers (kubespawner GHSA-v7m9-9497-p9gr)
    alloc = GPUAllocator()
    inventory = gpus(2)
    alloc.allocate(GPURequest("a-b", "", count=1), inventory)
    alloc.allocate(GPURequest("a", "b", count=1), inventory)
    alloc.release("a", "b")
    assert alloc.assignment("a-b") != ()


def test_rebuild_from_labels_replaces_the_table_and_keeps_in_flight():
    alloc = GPUAllocator()
    inventory = gpus(3)
    alloc.allocate(GPURequest("pending", count=1), inventory)
    alloc.allocate(GPURequest("stale", count=1), inventory)
    pending = alloc.assignment("pending")
    report = alloc.rebuild([("running", "", ("GPU-2",), "exclusive", 1)], keep=[("pending", "")])
    assert report.conflicts == []
    assert alloc.assignment("pending") == pending
    assert alloc.assignment("stale") == ()
    assert alloc.assignment("running") == ("GPU-2",)


def test_rebuild_reports_double_booking():
    alloc = GPUAllocator()
    report = alloc.rebuild(
        [("a", "", ("GPU-0",), "exclusive", 1), ("b", "", ("GPU-0",), "shared", 9)]
    )
    assert report.conflicts == [("GPU-0", (("a", ""), ("b", "")))]


def test_unknown_policy_on_a_container_label_is_read_as_exclusive():
    # A label value the hub does not know must not loosen isolation: "weird" with 9 users per GPU
    # would otherwise let shared servers join the GPU.
    alloc = GPUAllocator()
    inventory = gpus(1)
    alloc.restore("b", "", ("GPU-0",), "weird", 9)
    assert alloc.free_count(inventory, "shared", 9) == 0
    with pytest.raises(NoGPUAvailable, match="The only GPU is in use"):
        alloc.allocate(GPURequest("c", count=1, policy="shared", max_users_per_gpu=9), inventory)
    assert alloc.assignments() == {("b", ""): ("GPU-0",)}


def test_unknown_policy_in_a_request_is_refused_and_reserves_nothing():
    alloc = GPUAllocator()
    inventory = gpus(2)
    held = alloc.allocate(GPURequest("a", "srv", count=1), inventory)
    with pytest.raises(ValueError, match="^unknown GPU policy 'weird'$"):
        alloc.allocate(GPURequest("b", count=1, policy="weird"), inventory)
    # nor does a refused request of a server drop what that server already holds
    with pytest.raises(ValueError, match="^unknown GPU policy 'weird'$"):
        alloc.allocate(GPURequest("a", "srv", count=1, policy="weird"), inventory)
    assert alloc.assignments() == {("a", "srv"): held}
    assert alloc.free_count(inventory) == 1


request_st = st.builds(
    GPURequest,
    user=st.sampled_from(["u1", "u2", "u3", "u4", "u5"]),
    server=st.sampled_from(["", "x"]),
    count=st.integers(0, 4),
    policy=st.sampled_from(["exclusive", "shared"]),
    max_users_per_gpu=st.integers(1, 3),
)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(st.one_of(request_st, st.tuples(st.just("release"), request_st)), max_size=40),
    n=st.integers(0, 4),
    cap=st.one_of(st.none(), st.integers(0, 4)),
)
def test_random_sequences_never_overbook(ops, n, cap):
    alloc = GPUAllocator()
    inventory = gpus(n)
    for op in ops:
        if isinstance(op, tuple):
            alloc.release(op[1].user, op[1].server)
            continue
        op = dataclasses.replace(op, user_limit=cap)
        try:
            got = alloc.allocate(op, inventory)
            assert len(got) == op.count and len(set(got)) == op.count
        except (NoGPUAvailable, UserGPULimit):
            assert alloc.assignment(op.user, op.server) == ()
        assert alloc.conflicts() == []
        if cap is not None:
            for user in {k[0] for k in alloc.assignments()}:
                assert alloc.user_gpu_count(user) <= cap
        held = [u for uuids in alloc.assignments().values() for u in uuids]
        assert set(held) <= {g.uuid for g in inventory}


def test_a_just_released_gpu_is_not_mistaken_for_work_outside_the_hub():
    # the inventory snapshot was taken before the release: it still shows the stopped container's
    # memory
    alloc = GPUAllocator()
    alloc.allocate(GPURequest("old", count=1), gpus(1))
    stale = [GPU("GPU-0", 0, "A100", 80 * GiB, memory_used=30 * GiB, process_count=1)]
    alloc.release("old")
    assert alloc.allocate(GPURequest("next", count=1), stale) == ("GPU-0",)
    # a GPU this hub never held, with the same figures, is someone else's work
    with pytest.raises(NoGPUAvailable, match="busy with work outside JupyterHub"):
        GPUAllocator().allocate(GPURequest("next", count=1), stale)
