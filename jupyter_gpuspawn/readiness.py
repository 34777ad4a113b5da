"""Wait for a new single-user server to answer, polling quickly, and notice at once if its container exits.

JupyterHub's own check backs off to 5 s between tries, so in a burst of spawns it notices ready servers late.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Optional

from tornado.httpclient import AsyncHTTPClient, HTTPClientError


class ServerExited(Exception):
    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


async def wait_until_answering(url: str, *, timeout: float, interval: float,
                               exited: Callable[[], Awaitable[Optional[str]]], check_every: float = 1.0):
    """Return once ``url`` answers HTTP (any status), raise ServerExited when ``exited()`` reports an exit
    status, give up quietly after ``timeout`` seconds (the hub's own wait then decides)."""
    client = AsyncHTTPClient()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    next_check = loop.time() + check_every
    while loop.time() < deadline:
        try:
            await client.fetch(url, connect_timeout=1, request_timeout=2, follow_redirects=False)
            return
        except HTTPClientError:
            return  # it answered with an HTTP status: up
        except (OSError, asyncio.TimeoutError):
            pass
        if loop.time() >= next_check:
            next_check = loop.time() + check_every
            status = await exited()
            if status is not None:
                raise ServerExited(status)
        await asyncio.sleep(interval)
