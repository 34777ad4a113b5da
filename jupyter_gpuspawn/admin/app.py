"""The admin service's web app: one page (server-rendered, works without JavaScript) and two actions."""
from __future__ import annotations

import asyncio
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, urlencode

import jinja2
from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..budget import week_start
from ..reclaim import read_activity
from ..usage import UsageDB
from . import view

TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "templates")
NAME_LIMIT = 255  # user and server names the page passes to the hub API


class AdminState:
    """Where the page reads from; blocking reads run in one worker thread."""

    def __init__(self, runtime_dir: str, usage_db_url: str, week_start_spec: str):
        self.runtime_dir = runtime_dir
        self.usage_db_url = usage_db_url
        self.week_start_spec = week_start_spec
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="gpu-admin")
        self.templates = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)

    def read(self, now: float) -> dict:
        activity = read_activity(self.runtime_dir)
        usage_error, totals = "", []
        try:
            db = UsageDB(self.usage_db_url, create=False)
            try:
                totals = db.totals(week_start(now, self.week_start_spec), now)
            finally:
                db.dispose()
        except Exception as e:  # no records yet, or the database is down: the rest of the page still shows
            usage_error = f"Usage records unavailable: {e}"
        return {"activity": activity, "totals": totals, "usage_error": usage_error}


class AdminHandler(HubOAuthenticated, web.RequestHandler):
    def initialize(self, state: AdminState):
        self.state = state

    def write_error(self, status_code, **kwargs):
        # no stack traces in the browser
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code}: {self._reason}")


class PageHandler(AdminHandler):
    @web.authenticated
    async def get(self):
        now = time.time()
        data = await asyncio.get_running_loop().run_in_executor(self.state.executor, self.state.read, now)
        activity = data["activity"]
        html = self.state.templates.get_template("gpuspawn_admin.html").render(
            user=self.current_user.get("name", ""), gpus=view.gpu_rows(activity, now),
            queue=view.queue_rows(activity, now), courses=view.course_rows(data["totals"]),
            usage_error=data["usage_error"], stale=view.freshness(activity, now),
            done=self.get_argument("done", ""), failed=self.get_argument("failed", ""),
            refresh=self.get_argument("refresh", "") == "1", xsrf=self.xsrf_form_html(),
            base=os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/"),
        )
        self.set_header("Cache-Control", "no-store")
        self.finish(html)


class StopHandler(AdminHandler):
    """Stop a server, or cancel a start waiting in the queue: both are a DELETE of the server in the hub's API."""

    @web.authenticated
    async def post(self):
        user = self.get_body_argument("user", "")
        server = self.get_body_argument("server", "")
        action = self.get_body_argument("action", "stop")
        if not user or len(user) > NAME_LIMIT or len(server) > NAME_LIMIT or action not in ("stop", "dequeue"):
            raise web.HTTPError(400, "expected a user, a server name and an action (stop or dequeue)")
        name = f"{user}/{server}" if server else user
        api = os.environ["JUPYTERHUB_API_URL"]
        path = f"users/{quote(user, safe='')}/" + (f"servers/{quote(server, safe='')}" if server else "server")
        request = HTTPRequest(url_path_join(api, path), method="DELETE",
                              headers={"Authorization": f"token {os.environ['JUPYTERHUB_API_TOKEN']}"})
        try:
            await AsyncHTTPClient().fetch(request)
            done = {"stop": f"Stopping {name}", "dequeue": f"Removed {name} from the queue"}[action]
            self.redirect("./?" + urlencode({"done": done}))
        except HTTPClientError as e:
            try:
                message = json.loads(e.response.body)["message"] if e.response else str(e)
            except (ValueError, KeyError, TypeError):
                message = str(e)
            self.redirect("./?" + urlencode({"failed": f"Could not stop {name}: {message}"}))


def make_app(state: AdminState, prefix: str) -> web.Application:
    return web.Application(
        [
            (prefix, PageHandler, {"state": state}),
            (url_path_join(prefix, "stop"), StopHandler, {"state": state}),
            (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
        ],
        cookie_secret=os.urandom(32),
        xsrf_cookies=True,
    )
