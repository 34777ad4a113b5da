"""Readiness polling against real sockets: a server that comes up late, one that never speaks HTTP,
one whose container exits, and the back-off of the (costly) exit checks."""

import asyncio
import socket
import time

import pytest

from jupyter_gpuspawn.readiness import ServerExited, port_accepts, wait_until_answering


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def http_404(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    await writer.drain()
    writer.close()


async def hang_up(reader, writer):
    writer.close()


def never_exits():
    calls = []

    async def exited():
        calls.append(time.monotonic())
        return None

    return exited, calls


def test_port_accepts_only_a_listening_port():
    async def main():
        port = free_port()
        assert not await port_accepts("127.0.0.1", port)
        server = await asyncio.start_server(http_404, "127.0.0.1", port)
        async with server:
            assert await port_accepts("127.0.0.1", port)

    asyncio.run(main())


def test_returns_once_a_late_server_answers_http():
    async def main():
        port = free_port()
        exited, _ = never_exits()

        async def start_late():
            await asyncio.sleep(0.4)
            return await asyncio.start_server(http_404, "127.0.0.1", port)

        starting = asyncio.ensure_future(start_late())
        t0 = time.monotonic()
        await wait_until_answering(
            "127.0.0.1", port, "/user/a/api", timeout=5, interval=0.02, exited=exited
        )
        waited = time.monotonic() - t0
        server = await starting
        server.close()
        return waited

    waited = asyncio.run(main())
    assert 0.4 <= waited < 1.5


def test_a_port_that_never_speaks_http_is_not_ready():
    async def main():
        port = free_port()
        exited, _ = never_exits()
        server = await asyncio.start_server(hang_up, "127.0.0.1", port)
        async with server:
            t0 = time.monotonic()
            await wait_until_answering(
                "127.0.0.1", port, "/api", timeout=0.8, interval=0.05, exited=exited
            )
            return time.monotonic() - t0

    # it gave up at the timeout instead of calling that server ready
    assert asyncio.run(main()) >= 0.8


def test_exited_container_is_reported():
    async def main():
        async def exited():
            return ServerExited(3, output="ModuleNotFoundError: No module named 'jupyterhub'\n")

        await wait_until_answering(
            "127.0.0.1",
            free_port(),
            "/api",
            timeout=5,
            interval=0.01,
            exited=exited,
            first_exit_check=0.1,
        )

    t0 = time.monotonic()
    with pytest.raises(ServerExited) as info:
        asyncio.run(main())
    assert str(info.value) == "exit code 3" and "ModuleNotFoundError" in info.value.output
    assert time.monotonic() - t0 < 1


def test_exit_checks_back_off_while_polls_stay_fast():
    exited, calls = never_exits()

    async def main():
        await wait_until_answering(
            "127.0.0.1",
            free_port(),
            "/api",
            timeout=1.6,
            interval=0.01,
            exited=exited,
            first_exit_check=0.1,
            max_exit_check=0.4,
        )

    t0 = time.monotonic()
    asyncio.run(main())
    offsets = [c - t0 for c in calls]
    # at about 0.1, 0.3, 0.7, 1.1, 1.5 s: doubling gaps capped at 0.4 s, against ~100 connection
    # polls
    assert 4 <= len(offsets) <= 6, offsets
    gaps = [b - a for a, b in zip(offsets, offsets[1:], strict=False)]
    assert gaps[0] < gaps[1] < gaps[2] + 0.05 and max(gaps) < 0.5, gaps


def test_exit_summaries_say_what_happened():
    assert str(ServerExited(137, oom_killed=True)) == "it ran out of memory"
    assert str(ServerExited(None)) == "its container was removed"
    assert str(ServerExited(1, error="exec format error")) == "exit code 1: exec format error"
