"""The wait room: real allocator and queue, real asyncio; only the GPUs are made up."""

from __future__ import annotations

import asyncio

import pytest

from jupyter_gpuspawn.allocation import GPUAllocator, GPURequest, UserGPULimit
from jupyter_gpuspawn.gpus import GPU
from jupyter_gpuspawn.waitroom import QueueTimeout, WaitRoom, ordinal, waiting_message

GPUS = (GPU("GPU-0", 0, "A100", 80), GPU("GPU-1", 1, "A100", 80))


def room_with_both_gpus_taken(**kwargs):
    allocator = GPUAllocator(**kwargs)
    allocator.allocate(GPURequest("a", count=1), GPUS)
    allocator.allocate(GPURequest("b", count=1), GPUS)
    return allocator, WaitRoom(allocator, poll=0.01)


async def inventory():
    return GPUS


def test_the_first_in_line_gets_the_freed_gpu_and_the_next_moves_up():
    allocator, room = room_with_both_gpus_taken()
    places = {"c": [], "d": []}

    async def scenario():
        c = asyncio.ensure_future(
            room.wait(
                GPURequest("c", count=1),
                holds_other=False,
                timeout=5,
                gpus=inventory,
                on_place=lambda *p: places["c"].append(p),
            )
        )
        await asyncio.sleep(0.05)
        assert places["c"] == [(1, 1)]
        d = asyncio.ensure_future(
            room.wait(
                GPURequest("d", count=1),
                holds_other=False,
                timeout=5,
                gpus=inventory,
                on_place=lambda *p: places["d"].append(p),
            )
        )
        for _ in range(200):  # c sees the line grow behind it on its next round
            if len(places["c"]) == 2:
                break
            await asyncio.sleep(0.01)
        allocator.release("b")
        got = await asyncio.wait_for(c, 1)
        # d notices it moved up on its next round (every 0.01 s; longer on a busy machine)
        for _ in range(200):
            if len(places["d"]) == 2:
                break
            await asyncio.sleep(0.01)
        d.cancel()
        return got

    assert asyncio.run(scenario()) == ("GPU-1",)
    assert allocator.assignment("c") == ("GPU-1",) and allocator.assignment("d") == ()
    assert places["c"] == [(1, 1), (1, 2)] and places["d"] == [(2, 2), (1, 1)]
    assert len(room) == 0


def test_a_timeout_holds_nothing():
    allocator, room = room_with_both_gpus_taken()

    async def scenario():
        with pytest.raises(QueueTimeout):
            await room.wait(
                GPURequest("c", count=1),
                holds_other=False,
                timeout=0.1,
                gpus=inventory,
                on_place=lambda *p: None,
            )

    asyncio.run(scenario())
    assert allocator.assignment("c") == () and len(room) == 0


def test_a_cancelled_wait_leaves_the_line_and_a_last_moment_grant_is_given_back():
    allocator, room = room_with_both_gpus_taken()

    async def scenario():
        c = asyncio.ensure_future(
            room.wait(
                GPURequest("c", count=1),
                holds_other=False,
                timeout=5,
                gpus=inventory,
                on_place=lambda *p: None,
            )
        )
        await asyncio.sleep(0.05)
        allocator.release("a")
        room.dispatch_once(GPUS)  # GPU-0 is granted to c ...
        c.cancel()  # ... and the student cancels before c ever runs again
        with pytest.raises(asyncio.CancelledError):
            await c

    asyncio.run(scenario())
    assert allocator.assignment("c") == () and len(room) == 0
    assert allocator.free_count(GPUS) == 1  # GPU-0 is free again, not held for a start that is gone


def test_a_request_that_can_no_longer_be_met_ends_its_turn_with_the_reason():
    allocator, room = room_with_both_gpus_taken()

    async def scenario():
        waiting = asyncio.ensure_future(
            room.wait(
                GPURequest("a", "second", count=1, user_limit=1),
                holds_other=True,
                timeout=5,
                gpus=inventory,
                on_place=lambda *p: None,
            )
        )
        await asyncio.sleep(0.05)
        allocator.release("b")
        with pytest.raises(UserGPULimit):
            await asyncio.wait_for(waiting, 1)

    asyncio.run(scenario())
    assert allocator.assignment("a", "second") == () and allocator.free_count(GPUS) == 1


def test_messages():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st",
        "2nd",
        "3rd",
        "4th",
        "11th",
        "12th",
        "13th",
        "21st",
        "22nd",
        "101st",
        "111th",
    ]
    assert (
        waiting_message(2, 5, "NVIDIA A100 80GB")
        == "Waiting for a GPU: you are 2nd in line (5 waiting for NVIDIA A100 80GB)"
    )
