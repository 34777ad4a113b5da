"""The hub's REST API as the service calls it, with the service's own token (scopes: see
admin_service)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable
from urllib.parse import quote

from jupyterhub.utils import url_path_join
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

PAGE = 200  # users per page when listing: the hub's default page limit


class HubAPIError(Exception):
    """A refusal or an outage of the hub's API, as a sentence for the page."""


def server_path(user: str, server: str) -> str:
    return f"users/{quote(user, safe='')}/" + (
        f"servers/{quote(server, safe='')}" if server else "server"
    )


class HubAPI:
    def __init__(self, url: str | None = None, token: str | None = None):
        self.url = url or os.environ["JUPYTERHUB_API_URL"]
        self.token = token or os.environ["JUPYTERHUB_API_TOKEN"]

    async def request(self, method: str, path: str, body=None, not_found_ok: bool = False):
        """The decoded JSON answer (None for an empty one, or for a 404 when ``not_found_ok``)."""
        request = HTTPRequest(
            url_path_join(self.url, path),
            method=method,
            headers={"Authorization": f"token {self.token}"},
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,  # DELETE with a body (group members)
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as e:
            if e.code == 404 and not_found_ok:
                return None
            raise HubAPIError(_message(e)) from None
        except OSError as e:
            raise HubAPIError(f"the hub's API does not answer ({e})") from None
        return json.loads(response.body) if response.body else None

    async def user(self, name: str) -> dict | None:
        return await self.request("GET", f"users/{quote(name, safe='')}", not_found_ok=True)

    async def existing_users(self, names: Iterable[str]) -> list[str]:
        """Those of ``names`` the hub knows, in the order given (a few lookups at a time)."""
        names = list(names)
        gate = asyncio.Semaphore(8)

        async def known(name):
            async with gate:
                return await self.user(name) is not None

        found = await asyncio.gather(*(known(n) for n in names))
        return [n for n, ok in zip(names, found, strict=False) if ok]

    async def active_users(self) -> list[dict]:
        """Every user with a running or pending server, their servers included."""
        users, offset = [], 0
        while True:
            page = await self.request("GET", f"users?state=active&offset={offset}&limit={PAGE}")
            items = page.get("items", []) if isinstance(page, dict) else (page or [])
            users.extend(items)
            if len(items) < PAGE or not isinstance(page, dict):
                return users
            offset += PAGE

    async def group(self, name: str) -> dict | None:
        return await self.request("GET", f"groups/{quote(name, safe='')}", not_found_ok=True)

    async def create_group(self, name: str) -> dict:
        return await self.request("POST", f"groups/{quote(name, safe='')}", body={})

    async def add_members(self, group: str, users: list[str]) -> None:
        await self.request("POST", f"groups/{quote(group, safe='')}/users", body={"users": users})

    async def remove_members(self, group: str, users: list[str]) -> None:
        await self.request("DELETE", f"groups/{quote(group, safe='')}/users", body={"users": users})

    async def stop_server(self, user: str, server: str) -> None:
        await self.request("DELETE", server_path(user, server))


def _message(error: HTTPClientError) -> str:
    try:
        return str(json.loads(error.response.body)["message"]) if error.response else str(error)
    except (ValueError, KeyError, TypeError):
        return str(error)


def servers_of(users: list[dict]) -> dict[tuple, dict]:
    """{(user, server name): server model} from active_users()."""
    return {
        (u.get("name", ""), name): model
        for u in users
        for name, model in (u.get("servers") or {}).items()
    }
