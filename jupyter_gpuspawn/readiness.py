"""Wait for a new single-user server to answer, polling quickly, and notice soon if its container
exits.

JupyterHub's own check backs off to 5 s between tries, so in a burst of spawns it notices ready
servers late. The fast polls must stay cheap, because a burst is CPU-bound and the hub shares the
cores with the servers it waits for: until the port accepts a connection a poll is one non-blocking
connect (no HTTP client, no resolver thread); asking Docker whether the container exited costs far
more, so those checks back off.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

from docker.errors import NotFound
from tornado.httpclient import AsyncHTTPClient, HTTPClientError


class ServerExited(Exception):
    """The container of a starting server is no longer running: how it ended, and its last
    output."""

    def __init__(
        self, exit_code: int | None, *, oom_killed: bool = False, error: str = "", output: str = ""
    ):
        self.exit_code, self.oom_killed, self.error, self.output = (
            exit_code,
            oom_killed,
            error,
            output,
        )
        super().__init__(self.summary)

    @property
    def summary(self) -> str:
        if self.oom_killed:
            return "it ran out of memory"
        if self.exit_code is None:
            return "its container was removed"
        return f"exit code {self.exit_code}" + (f": {self.error}" if self.error else "")


def container_exit(client, container_id: str, output_lines: int = 20) -> ServerExited | None:
    """None while the container runs; otherwise how it ended (docker-py APIClient; blocking). The
    container must not be auto-removed, or exit code and output are gone with it."""
    try:
        state = client.inspect_container(container_id)["State"]
    except NotFound:
        return ServerExited(None)
    if state.get("Running") or state.get("Status") in ("created", "restarting"):
        return None
    try:
        output = client.logs(container_id, tail=output_lines).decode(errors="replace")
    except NotFound:
        output = ""
    return ServerExited(
        state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled")),
        error=state.get("Error") or "",
        output=output,
    )


async def port_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on host:port. A host name (DockerSpawner's internal
    host names) is not resolved here: it counts as accepting, and the HTTP check decides."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return True
    loop = asyncio.get_running_loop()
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
        except (OSError, asyncio.TimeoutError):
            return False
    return True


async def answers_http(url: str) -> bool:
    try:
        await AsyncHTTPClient().fetch(
            url, connect_timeout=1, request_timeout=2, follow_redirects=False
        )
    except HTTPClientError as e:
        # an HTTP status means a server is there; 599 is tornado's "no HTTP answer"
        return e.code != 599
    except (OSError, asyncio.TimeoutError):
        return False
    return True


async def wait_until_answering(
    host: str,
    port: int,
    path: str,
    *,
    timeout: float,
    interval: float,
    exited: Callable[[], Awaitable[ServerExited | None]],
    first_exit_check: float = 0.5,
    max_exit_check: float = 4.0,
):
    """Return once http://host:port/path answers HTTP (any status); raise what ``exited()`` returns
    once it returns something (a ServerExited); give up quietly after ``timeout`` seconds (the hub's
    own wait then decides).

    ``exited`` is asked after ``first_exit_check`` seconds, then at doubling gaps up to
    ``max_exit_check``: a server that cannot start usually dies at once, and a slow one in a busy
    burst needs no Docker call a second.
    """
    url_host = f"[{host}]" if ":" in host else host
    url = f"http://{url_host}:{port}{path}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    exit_check_gap = first_exit_check
    next_exit_check = loop.time() + exit_check_gap
    while loop.time() < deadline:
        if await port_accepts(host, port) and await answers_http(url):
            return
        if loop.time() >= next_exit_check:
            ended = await exited()
            if ended is not None:
                raise ended
            exit_check_gap = min(2 * exit_check_gap, max_exit_check)
            next_exit_check = loop.time() + exit_check_gap
        await asyncio.sleep(interval)
