"""The service's web app (server-rendered, works without JavaScript): the admins' GPU page and its
two actions; the instructors' course pages are in courses.py."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import jinja2
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.log import app_log

from ..budget import week_start
from ..form import template_environment
from ..reclaim import read_activity
from ..usage import UsageDB
from . import view
from .desk import CourseDesk, Who
from .hubapi import HubAPI, HubAPIError

TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "templates")
NAME_LIMIT = 255  # user and server names the page passes to the hub API


class AdminState:
    """Where the page reads from; blocking reads run in one worker thread."""

    def __init__(
        self,
        runtime_dir: str,
        usage_db_url: str,
        week_start_spec: str,
        desk: CourseDesk | None = None,
        form_template_paths=(),
    ):
        self.runtime_dir = runtime_dir
        self.desk = desk  # None: the hub has no courses_dir, so there are no course pages
        self.usage_db_url = usage_db_url
        self.week_start_spec = week_start_spec
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="gpu-admin")
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True
        )
        self.templates.filters["when"] = lambda t: time.strftime(
            "%Y-%m-%d %H:%M:%S", time.localtime(t)
        )
        # the students' form, for previews
        self.form_templates = template_environment(form_template_paths)

    def read(self, now: float) -> dict:
        totals = self.week_totals(now)
        unavailable = "Usage records unavailable (the service's log says why)."
        return {
            "activity": read_activity(self.runtime_dir),
            "totals": totals or [],
            "usage_error": "" if totals is not None else unavailable,
        }

    def week_totals(self, now: float, course: str | None = None) -> list[dict] | None:
        """This week's GPU-hours per user and course (UsageDB.totals), of one course if given; None
        when the records cannot be read (none yet, or the database is down: the rest of the page
        still shows). Blocking."""
        try:
            db = UsageDB(self.usage_db_url, create=False)
            try:
                return db.totals(week_start(now, self.week_start_spec), now, course=course)
            finally:
                db.dispose()
        except Exception as e:
            # the message may carry the database URL, password included: the log gets it, the page
            # does not
            app_log.warning(
                "usage records unavailable: %s",
                str(e).replace(self.usage_db_url, _safe_url(self.usage_db_url)),
            )
            return None


class ServiceHandler(HubOAuthenticated, web.RequestHandler):
    """What every page of the service shares: HubOAuth, no framing, errors without stack traces,
    signed notes."""

    def initialize(self, state: AdminState):
        self.state = state

    def set_default_headers(self):
        # Stop is a one-click form: never inside someone else's frame
        self.set_header("Content-Security-Policy", "frame-ancestors 'none'")
        self.set_header("X-Frame-Options", "DENY")

    def write_error(self, status_code, **kwargs):
        # no stack traces in the browser: our own refusals say why, anything else only its status
        error = kwargs.get("exc_info", (None, None))[1]
        why = (
            error.log_message
            if isinstance(error, web.HTTPError) and status_code < 500 and error.log_message
            else self._reason
        )
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code}: {why}")

    @property
    def who(self) -> Who:
        user = self.current_user or {}
        return Who(user.get("name", ""), tuple(user.get("groups") or ()), bool(user.get("admin")))

    async def blocking(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(
            self.state.executor, lambda: fn(*args, **kwargs)
        )

    def redirect_with_note(self, url: str, done: str = "", failed: str = ""):
        """Back to a page with a message to show there. The message is signed: a link someone
        crafted cannot make the page say what they want."""
        note = {"done": done} if done else {"failed": failed}
        key, text = next(iter(note.items()))
        # bound to the user: a link one user makes the service sign shows nothing to anyone else
        name = f"note-{key}-{self.who.name}"
        self.redirect(url + "?" + urlencode({key: self.create_signed_value(name, text[:2000])}))

    def note(self, key: str) -> str:
        signed = self.get_argument(key, "")
        if not signed:
            return ""
        value = web.decode_signed_value(
            self.application.settings["cookie_secret"],
            f"note-{key}-{self.who.name}",
            signed,
            max_age_days=1,
        )
        return value.decode("utf-8", "replace") if value else ""

    def render_page(self, template: str, status: int = 200, **values):
        self.set_status(status)
        self.set_header("Cache-Control", "no-store")
        self.finish(
            self.state.templates.get_template(template).render(
                user=self.who.name,
                is_admin=self.who.admin,
                xsrf=self.xsrf_form_html(),
                base=os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/"),
                done=self.note("done"),
                failed=self.note("failed"),
                **values,
            )
        )


class AdminHandler(ServiceHandler):
    def check_hub_user(self, model):
        # the access scope alone is not enough: instructors, and on some hubs every student, have
        # access:services; this page stops anyone's server. Instructors are sent to their courses.
        model = super().check_hub_user(model)
        if model is not None and not model.get("admin"):
            raise web.HTTPError(403, "the GPU admin page is for JupyterHub admins")
        return model


class PageHandler(ServiceHandler):
    """The GPU page for admins; an instructor who opens the service (Services menu) is sent to their
    courses."""

    @web.authenticated
    async def get(self):
        if not self.who.admin:
            desk = self.state.desk
            if desk is not None and desk.may_create(
                self.who, await self.blocking(desk.mine, self.who)
            ):
                self.redirect("courses/")
                return
            raise web.HTTPError(
                403, "the GPU admin page is for JupyterHub admins and the instructors of a course"
            )
        now = time.time()
        data = await self.blocking(self.state.read, now)
        activity = data["activity"]
        self.render_page(
            "gpuspawn_admin.html",
            gpus=view.gpu_rows(activity, now),
            queue=view.queue_rows(activity, now),
            courses=view.course_rows(data["totals"]),
            usage_error=data["usage_error"],
            stale=view.freshness(activity, now),
            refresh=self.get_argument("refresh", "") == "1",
        )


class StopHandler(AdminHandler):
    """Stop a server, or cancel a start waiting in the queue: both are a DELETE of the server in the
    hub's API."""

    @web.authenticated
    async def post(self):
        user = self.get_body_argument("user", "")
        server = self.get_body_argument("server", "")
        action = self.get_body_argument("action", "stop")
        if (
            not user
            or len(user) > NAME_LIMIT
            or len(server) > NAME_LIMIT
            or action not in ("stop", "dequeue")
        ):
            raise web.HTTPError(
                400, "expected a user, a server name and an action (stop or dequeue)"
            )
        name = f"{user}/{server}" if server else user
        hub = HubAPI()
        try:
            if action == "dequeue":
                # the page may be older than the queue: a start that got its GPUs meanwhile is not
                # stopped here
                info = ((await hub.user(user) or {}).get("servers") or {}).get(server) or {}
                if info.get("pending") != "spawn":
                    self.redirect_with_note("./", failed=f"{name} no longer waits in the queue")
                    return
            await hub.stop_server(user, server)
        except HubAPIError as e:
            self.redirect_with_note("./", failed=f"Could not stop {name}: {e}")
            return
        app_log.info("%s: %s %s", self.who.name, action, name)
        done = {"stop": f"Stopping {name}", "dequeue": f"Removed {name} from the queue"}[action]
        self.redirect_with_note("./", done=done)


def _safe_url(url: str) -> str:
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(the usage database)"


def cookie_secret(runtime_dir: str) -> bytes:
    """A secret kept in runtime_dir (0600): a hub restart restarts the service, and the admin's open
    tab, its login cookie and its XSRF token must survive that."""
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
    from .courses import course_routes

    # the hub's answer about a user (their groups: who is an instructor) is cached this long, not 5
    # minutes
    HubOAuth.instance(cache_max_age=30)

    return web.Application(
        [
            (prefix, PageHandler, {"state": state}),
            (url_path_join(prefix, "stop"), StopHandler, {"state": state}),
            *course_routes(prefix, state),
            (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
        ],
        cookie_secret=cookie_secret(state.runtime_dir),
        xsrf_cookies=True,
        service_prefix=prefix,
    )
