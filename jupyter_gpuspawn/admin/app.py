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
from tornado.log import app_log
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
            # the message may carry the database URL, password included: the log gets it, the page does not
            app_log.warning("usage records unavailable: %s", str(e).replace(self.usage_db_url, _safe_url(
                self.usage_db_url)))
            usage_error = "Usage records unavailable (the service's log says why)."
        return {"activity": activity, "totals": totals, "usage_error": usage_error}


class AdminHandler(HubOAuthenticated, web.RequestHandler):
    def initialize(self, state: AdminState):
        self.state = state

    def check_hub_user(self, model):
        # the access scope alone is not enough: some hubs give every student access:services for other services,
        # and this page stops anyone's server
        model = super().check_hub_user(model)
        if model is not None and not model.get("admin"):
            raise web.HTTPError(403, "the GPU admin page is for JupyterHub admins")
        return model

    def set_default_headers(self):
        # Stop is a one-click form: never inside someone else's frame
        self.set_header("Content-Security-Policy", "frame-ancestors 'none'")
        self.set_header("X-Frame-Options", "DENY")

    def write_error(self, status_code, **kwargs):
        # no stack traces in the browser: our own refusals say why, anything else only its status
        error = kwargs.get("exc_info", (None, None))[1]
        why = error.log_message if isinstance(error, web.HTTPError) and status_code < 500 and error.log_message \
            else self._reason
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code}: {why}")


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
        headers = {"Authorization": f"token {os.environ['JUPYTERHUB_API_TOKEN']}"}
        client = AsyncHTTPClient()
        try:
            if action == "dequeue":
                # the page may be older than the queue: a start that got its GPUs meanwhile is not stopped here
                r = await client.fetch(url_path_join(api, f"users/{quote(user, safe='')}"), headers=headers)
                info = (json.loads(r.body).get("servers") or {}).get(server) or {}
                if info.get("pending") != "spawn":
                    self.redirect("./?" + urlencode({"failed": f"{name} no longer waits in the queue"}))
                    return
            path = f"users/{quote(user, safe='')}/" + (f"servers/{quote(server, safe='')}" if server else "server")
            await client.fetch(HTTPRequest(url_path_join(api, path), method="DELETE", headers=headers))
        except HTTPClientError as e:
            try:
                message = json.loads(e.response.body)["message"] if e.response else str(e)
            except (ValueError, KeyError, TypeError):
                message = str(e)
            self.redirect("./?" + urlencode({"failed": f"Could not stop {name}: {message}"}))
            return
        except OSError as e:  # the hub's API does not answer
            self.redirect("./?" + urlencode({"failed": f"Could not reach the hub to stop {name}: {e}"}))
            return
        app_log.info("%s: %s %s", self.current_user.get("name"), action, name)
        done = {"stop": f"Stopping {name}", "dequeue": f"Removed {name} from the queue"}[action]
        self.redirect("./?" + urlencode({"done": done}))


def _safe_url(url: str) -> str:
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(the usage database)"


def cookie_secret(runtime_dir: str) -> bytes:
    """A secret kept in runtime_dir (0600): a hub restart restarts the service, and the admin's open tab, its login
    cookie and its XSRF token must survive that."""
    path = os.path.join(runtime_dir, "admin-cookie-secret")
    os.makedirs(runtime_dir, mode=0o755, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as f:
            secret = f.read()
        if len(secret) >= 32:
            return secret
        os.unlink(path)  # cut short by a crash: make a new one
        return cookie_secret(runtime_dir)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))
    return cookie_secret(runtime_dir)


def make_app(state: AdminState, prefix: str) -> web.Application:
    return web.Application(
        [
            (prefix, PageHandler, {"state": state}),
            (url_path_join(prefix, "stop"), StopHandler, {"state": state}),
            (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
        ],
        cookie_secret=cookie_secret(state.runtime_dir),
        xsrf_cookies=True,
    )
