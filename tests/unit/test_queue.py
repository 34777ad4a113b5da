"""The GPU queue's ordering, positions, deadlines and strict first-come-first-served grants (pure,
no hub)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_gpuspawn.allocation import GiB, GPUAllocator, GPURequest, NoGPUAvailable
from jupyter_gpuspawn.gpus import GPU
from jupyter_gpuspawn.queue import GPUQueue, Ticket


def gpus(n, prefix="GPU"):
    return [
        GPU(uuid=f"{prefix}-{i}", index=i, name="Test GPU", memory_total=80 * GiB) for i in range(n)
    ]


def join(queue, user, count=1, pool="a100", holds_other=False, now=0.0, timeout=None, server=""):
    return queue.join(
        GPURequest(user, server, count=count),
        pool=pool,
        holds_other=holds_other,
        now=now,
        timeout=timeout,
    )


def users(tickets):
    return [t.key[0] for t in tickets]


# ---- order and positions -------------------------------------------------------------------------
def test_positions_and_totals_are_per_pool():
    q = GPUQueue()
    join(q, "a", pool="a100")
    join(q, "b", pool="h100")
    join(q, "c", pool="a100")
    join(q, "d", pool="a100")
    assert q.position(("a", "")) == (1, 3)
    assert q.position(("c", "")) == (2, 3)
    assert q.position(("d", "")) == (3, 3)
    assert q.position(("b", "")) == (1, 1)
    assert q.position(("nobody", "")) is None
    assert len(q) == 4
    assert ("c", "") in q and ("c", "other") not in q
    assert users(q.waiting("a100")) == ["a", "c", "d"]
    assert users(q.waiting("h100")) == ["b"]
    assert q.waiting("v100") == []
    assert sorted(users(q.waiting())) == ["a", "b", "c", "d"]


def test_first_come_first_served():
    q = GPUQueue()
    for name in "edcba":  # join order, not name order
        join(q, name)
    assert users(q.waiting("a100")) == list("edcba")
    assert [q.position((n, ""))[0] for n in "edcba"] == [1, 2, 3, 4, 5]


def test_holders_elsewhere_wait_behind_later_non_holders():
    q = GPUQueue()
    join(q, "h1", holds_other=True)
    join(q, "n1")
    join(q, "h2", holds_other=True)
    join(q, "n2")
    # Non-holders first (in join order), then holders (in join order).
    assert users(q.waiting("a100")) == ["n1", "n2", "h1", "h2"]
    assert q.position(("h1", "")) == (3, 4)
    assert q.position(("n2", "")) == (2, 4)


def test_servers_of_one_user_are_separate_keys_and_a_key_joins_once():
    q = GPUQueue()
    first = join(q, "a", server="x")
    join(q, "a", server="y")
    with pytest.raises(ValueError, match="already waiting"):
        join(q, "a", server="x")
    with pytest.raises(ValueError, match="already waiting"):
        join(q, "a", server="x", pool="other-pool")  # not even in another pool
    assert q.waiting("a100")[0] is first and len(q) == 2  # nothing replaced
    # After leaving, the same server may join again: at the back.
    q.leave(("a", "x"))
    join(q, "a", server="x")
    assert q.position(("a", "x")) == (2, 2)


def test_leave_removes_and_those_behind_move_up_by_one():
    q = GPUQueue()
    for name in "abcde":
        join(q, name)
    left = q.leave(("b", ""))
    assert isinstance(left, Ticket) and left.key == ("b", "")
    assert ("b", "") not in q and len(q) == 4
    assert q.position(("a", "")) == (1, 4)  # ahead: unchanged place
    assert [q.position((n, "")) for n in "cde"] == [(2, 4), (3, 4), (4, 4)]
    assert q.leave(("b", "")) is None  # twice: nothing
    assert q.leave(("never", "")) is None
    for name in "acde":
        q.leave((name, ""))
    assert len(q) == 0 and q.waiting() == []


def test_join_rejects_requests_that_cannot_wait():
    q = GPUQueue()
    with pytest.raises(ValueError):
        join(q, "a", count=0)  # a CPU-only start never waits for GPUs
    with pytest.raises(ValueError):
        join(q, "a", timeout=-1)
    with pytest.raises(ValueError):
        join(q, "a", timeout=math.nan)
    assert len(q) == 0


def test_position_if_joined():
    q = GPUQueue()
    assert q.position_if_joined("a100", holds_other=False) == 1
    join(q, "n1")
    join(q, "h1", holds_other=True)
    join(q, "n2")
    join(q, "x", pool="h100")
    assert q.position_if_joined("a100", holds_other=False) == 3
    assert q.position_if_joined("a100", holds_other=True) == 4
    assert q.position_if_joined("h100", holds_other=False) == 2
    # The prediction is what join then gives.
    assert q.position(join(q, "n3").key) == (3, 4)


# ---- property: a non-holder's place never gets worse ---------------------------------------------
POOLS = ("p", "q")
operations = st.lists(
    st.one_of(
        st.tuples(st.just("join"), st.sampled_from(POOLS), st.booleans()),
        st.tuples(st.just("leave"), st.integers(min_value=0, max_value=40)),
        st.tuples(st.just("grant"), st.integers(min_value=0, max_value=3)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_a_non_holders_position_never_gets_worse(ops):
    q = GPUQueue()
    joined = []  # every key that ever joined, in join order
    holder = {}
    before = {}
    for step, op in enumerate(ops):
        if op[0] == "join":
            key = (f"u{step}", "")
            q.join(GPURequest(*key, count=1), pool=op[1], holds_other=op[2], now=float(step))
            joined.append(key)
            holder[key] = op[2]
        elif op[0] == "leave" and joined:
            q.leave(joined[op[1] % len(joined)])
        elif op[0] == "grant":
            budget = [op[1]]  # serve at most this many, then the pool is "out of GPUs"

            def try_allocate(ticket, budget=budget):
                if budget[0] == 0:
                    raise NoGPUAvailable("full")
                budget[0] -= 1
                return ("GPU-x",)

            q.grant(try_allocate)
        now = {key: q.position(key) for key in joined if key in q}
        for key, (place, total) in now.items():
            if key in before and not holder[key]:
                assert place <= before[key][0], (
                    f"{key}: {before[key]} -> {(place, total)} after {op}"
                )
        # Positions are a consistent numbering of each pool's waiting list.
        for pool in POOLS:
            tickets = q.waiting(pool)
            n = len(tickets)
            assert [q.position(t.key) for t in tickets] == [(i + 1, n) for i in range(n)]
            flags = [t.holds_other for t in tickets]
            assert flags == sorted(flags)  # non-holders, then holders
            seqs = [t.seq for t in tickets if not t.holds_other]
            assert seqs == sorted(seqs)
        assert len(q) == sum(len(q.waiting(p)) for p in POOLS)
        before = now


# ---- grants with a real allocator ----------------------------------------------------------------
def test_grant_is_strict_fifo_a_two_gpu_head_blocks_a_smaller_request_behind_it():
    alloc = GPUAllocator()
    inventory = gpus(2)
    alloc.allocate(GPURequest("holder1", count=1), inventory)
    alloc.allocate(GPURequest("holder2", count=1), inventory)
    q = GPUQueue()
    join(q, "big", count=2)
    join(q, "small", count=1)
    tried = []

    def try_allocate(ticket):
        tried.append(ticket.key[0])
        return alloc.allocate(ticket.request, inventory)

    assert q.grant(try_allocate) == []  # nothing free
    alloc.release("holder1")
    # One GPU free: the 2-GPU head cannot start, and the 1-GPU request behind it is not even tried.
    tried.clear()
    assert q.grant(try_allocate) == []
    assert tried == ["big"]
    assert users(q.waiting("a100")) == ["big", "small"]
    # The free GPU stays free for "big".
    assert alloc.assignment("small") == () and alloc.free_count(inventory) == 1
    alloc.release("holder2")
    # Two free: the head takes both; the next one is tried and cannot start (still waiting, now
    # first).
    granted = q.grant(try_allocate)
    assert [(t.key[0], set(uuids)) for t, uuids in granted] == [("big", {"GPU-0", "GPU-1"})]
    assert q.position(("small", "")) == (1, 1)
    alloc.release("big")
    granted = q.grant(try_allocate)
    assert [t.key[0] for t, _ in granted] == ["small"] and len(q) == 0
    assert alloc.assignment("small") == granted[0][1]


def test_grant_serves_as_many_as_fit_in_order_and_returns_them_in_order():
    alloc = GPUAllocator()
    inventory = gpus(4)
    alloc.allocate(GPURequest("holder", count=4), inventory)
    q = GPUQueue()
    join(q, "h", holds_other=True)  # joined first, but holds GPUs elsewhere: behind the others
    for name in "abc":
        join(q, name)
    alloc.release("holder")
    granted = q.grant(lambda t: alloc.allocate(t.request, inventory))
    assert [t.key[0] for t, _ in granted] == ["a", "b", "c", "h"]
    assert len({uuid for _, uuids in granted for uuid in uuids}) == 4
    assert len(q) == 0


def test_grants_stop_per_pool_independently():
    alloc = GPUAllocator()
    pools = {"a100": gpus(2, "A100"), "h100": gpus(2, "H100")}
    alloc.allocate(GPURequest("holder", count=1), pools["a100"])  # a100: one of two free
    q = GPUQueue()
    join(q, "big", count=2, pool="a100")
    join(q, "small", count=1, pool="a100")
    join(q, "x", count=1, pool="h100")
    join(q, "y", count=1, pool="h100")
    join(q, "z", count=1, pool="h100")
    tried = []

    def try_allocate(ticket):
        tried.append(ticket.key[0])
        return alloc.allocate(ticket.request, pools[ticket.pool])

    granted = q.grant(try_allocate)
    # a100 blocked at its head; h100 served until it ran out, its third waiter tried and left
    # waiting.
    assert [(t.key[0], t.pool) for t, _ in granted] == [("x", "h100"), ("y", "h100")]
    assert "small" not in tried and "z" in tried
    assert users(q.waiting("a100")) == ["big", "small"]
    assert q.position(("z", "")) == (1, 1)


def test_grant_tries_the_earlier_waiter_first_when_pools_share_gpus():
    alloc = GPUAllocator()
    inventory = gpus(1)
    alloc.allocate(GPURequest("holder", count=1), inventory)
    q = GPUQueue()
    join(q, "first", pool="course-b")
    join(q, "second", pool="course-a")
    alloc.release("holder")
    granted = q.grant(lambda t: alloc.allocate(t.request, inventory))
    assert [t.key[0] for t, _ in granted] == ["first"]
    assert users(q.waiting()) == ["second"]


def test_a_failed_grant_keeps_the_ticket_and_its_place():
    q = GPUQueue()
    ticket = join(q, "a")
    join(q, "b")

    def full(_ticket):
        raise NoGPUAvailable("all in use")

    assert q.grant(full) == []
    assert q.waiting("a100")[0] is ticket and q.position(("a", "")) == (1, 2)


# ---- deadlines -----------------------------------------------------------------------------------
