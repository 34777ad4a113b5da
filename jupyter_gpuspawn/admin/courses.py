"""The instructors' pages ("My courses"): list, create, edit (form or YAML), preview, archive,
enrol, watch and stop.

Who may do what is decided in desk.py (course files, ownership, caps) and here for what goes through
the hub's API (enrolment only into the course's own group, stops only of servers running the
course). Every action is a form POST with JupyterHub's usual XSRF protection; every page is rendered
with autoescaping.
"""

from __future__ import annotations

import re
import time

from jupyterhub.utils import url_path_join
from tornado import web
from tornado.log import app_log

from ..course_edit import data_from_form, form_from_data
from ..course_store import normalized_text
from ..course_yaml import parse_yaml_text
from ..courses import MAX_IMAGES, CourseError
from ..reclaim import read_activity
from . import view
from .app import NAME_LIMIT, ServiceHandler
from .desk import Entry, Refused
from .hubapi import HubAPI, HubAPIError, servers_of

COURSE_ID = r"([a-z0-9][a-z0-9_-]{0,63})"
MAX_ENROL = 1000  # names in one pasted list


class InstructorHandler(ServiceHandler):
    """Admins, and users who manage at least one course; everyone else gets 403 on every page and
    action."""

    async def instructor(self) -> list[Entry]:
        if self.state.desk is None:
            raise web.HTTPError(
                404, "this hub has no course directory (c.GPUDockerSpawner.courses_dir)"
            )
        mine = await self.blocking(self.state.desk.mine, self.who)
        # nobody else may see or do anything here
        if not self.state.desk.may_create(self.who, mine):
            raise web.HTTPError(
                403, "the course pages are for the instructors of a course and for admins"
            )
        return mine

    async def entry(self, course_id: str) -> Entry:
        await self.instructor()
        try:
            return await self.blocking(self.state.desk.entry, course_id, self.who)
        except Refused as e:
            raise web.HTTPError(e.status, " ".join(e.problems)) from None

    def course_url(self, course_id: str = "") -> str:
        return url_path_join(self.settings["service_prefix"], "courses", course_id) + "/"


class CourseListHandler(InstructorHandler):
    @web.authenticated
    async def get(self):
        mine = await self.instructor()
        self.render_page(
            "gpuspawn_courses.html",
            courses=mine,
            limits=self.state.desk.limits.describe(),
            problems=[],
            new_id="",
            new_title="",
            template_id="",
        )

    @web.authenticated
    async def post(self):
        mine = await self.instructor()
        course_id = self.get_body_argument("id", "")[:100].strip()
        title = self.get_body_argument("title", "")[:300]
        template = self.get_body_argument("template", "")[:100]
        try:
            group = f"{self.state.desk.limits.group_prefix}{course_id}"
            if await HubAPI().group(group) is not None:
                # someone's group already: a new course must not show itself to, or enrol into,
                # other people
                raise Refused(
                    400,
                    [
                        f"id: the hub group {group!r} exists already; choose another id, or ask an "
                        "admin to give an existing group a course"
                    ],
                )
            await self.blocking(self.state.desk.create, self.who, course_id, title, template)
        except HubAPIError as e:
            self.redirect_with_note(
                self.course_url(), failed=f"Could not ask the hub about the group: {e}"
            )
            return
        except Refused as e:
            self.render_page(
                "gpuspawn_courses.html",
                status=e.status,
                courses=mine,
                limits=self.state.desk.limits.describe(),
                problems=e.problems,
                new_id=course_id,
                new_title=title,
                template_id=template,
            )
            return
        app_log.info(
            "%s: created course %s%s",
            self.who.name,
            course_id,
            f" from {template}" if template else "",
        )
        self.redirect_with_note(
            self.course_url(course_id),
            done=f"Created {course_id}. Students see it once "
            "they are enrolled; it is not archived.",
        )


class CourseHandler(InstructorHandler):
    @web.authenticated
    async def get(self, course_id: str):
        entry = await self.entry(course_id)
        await self.render_course(entry)

    @web.authenticated
    async def post(self, course_id: str):
        entry = await self.entry(course_id)
        mode = self.get_body_argument("mode", "form")
        revision = self.get_body_argument("revision", "")
        text = None
        form = {
            k: [v.decode("utf-8", "replace") for v in vs]
            for k, vs in self.request.body_arguments.items()
        }
        if mode == "yaml":
            # checked as it will be written (the store writes Unix line ends)
            text = normalized_text(self.get_body_argument("yaml", ""))
            try:
                new, problems = await self.blocking(parse_yaml_text, text, entry.name), []
            except CourseError as e:
                new, problems = None, e.problems
        elif mode in ("form", "preview"):
            if len(form.get("image") or ()) > MAX_IMAGES:
                raise web.HTTPError(400, f"a course has at most {MAX_IMAGES} images")
            new, problems = await self.blocking(data_from_form, form, entry.data or {})
        else:
            raise web.HTTPError(400, "mode must be form, preview or yaml")
        if not problems:
            try:
                if mode == "preview":
                    course = await self.blocking(self.state.desk.check, entry, new, self.who)
                    await self.render_course(
                        entry, form=form, revision=revision, preview=course, previewing=True
                    )
                    return
                _, changes = await self.blocking(
                    self.state.desk.save, course_id, self.who, new, revision, text
                )
            except Refused as e:
                problems = e.problems
                status = e.status
            else:
                app_log.info(
                    "%s: edited course %s: %s",
                    self.who.name,
                    course_id,
                    "; ".join(changes) or "nothing",
                )
                note = f"Saved {course_id}: " + (
                    "; ".join(changes) if changes else "nothing changed"
                )
                self.redirect_with_note(self.course_url(course_id), done=note)
                return
        else:
            status = 400
        conflict = status == 409
        await self.render_course(
            entry,
            status=status,
            problems=problems,
            form=form if mode != "yaml" else None,
            yaml_text=text,
            # after a conflict the page shows the current file beside the kept edit: saving again
            # is a choice made knowing it, so it carries the current revision
            revision=entry.stored.revision if conflict else revision,
            mode=mode,
            conflict=conflict,
        )

    async def render_course(
        self,
        entry: Entry,
        status: int = 200,
        problems=(),
        form=None,
        yaml_text=None,
        revision=None,
        mode="form",
        preview=None,
        previewing=False,
        conflict=False,
    ):
        """The course page. After a refused save it keeps what the instructor typed (and the
        revision they started from, so saving again cannot overwrite someone else's change; after
        a conflict, the current file is shown too)."""
        desk = self.state.desk
        now = time.time()
        fields = form_from_data(entry.data or {}) if form is None else view.form_values(form)
        live = await self.live(entry, now)
        history = await self.blocking(desk.history, entry.id)
        preview_html = await self.blocking(self.preview, preview or entry.course, live["activity"])
        self.render_page(
            "gpuspawn_course.html",
            status=status,
            entry=entry,
            fields=fields,
            problems=list(problems),
            yaml_text=entry.stored.text if yaml_text is None else yaml_text,
            revision=entry.stored.revision if revision is None else revision,
            mode=mode,
            images=view.image_choices(desk.limits.images, entry.data or {}, fields),
            limits=desk.limits.describe(),
            history=history,
            preview=preview_html,
            previewing=previewing,
            conflict=conflict,
            course_url=self.course_url(entry.id),
            policies=("exclusive", "shared"),
            reclaims=view.reclaim_choices(desk.limits.allow_reclaim_never, self.who.admin),
            **live,
        )

    def preview(self, course, activity) -> str:
        if course is None:
            return ""
        return view.preview_card(self.state.form_templates, course, activity)

    async def live(self, entry: Entry, now: float) -> dict:
        """Who runs the course now, the enrolment group and its members, this week's GPU-hours per
        student."""
        live = {
            "students": [],
            "live_error": "",
            "group": "",
            "members": [],
            "enrol_error": "",
            "usage": [],
            "activity": {},
        }
        activity, totals = await self.blocking(self.usage_and_activity, entry.id, now)
        live["activity"], live["usage"] = activity, totals
        hub = HubAPI()
        try:
            servers = servers_of(await hub.active_users())
            live["students"] = view.student_rows(entry.id, servers, activity, now)
        except HubAPIError as e:
            live["live_error"] = f"Could not ask the hub who is running: {e}"
        try:
            live["group"] = await self.blocking(self.state.desk.enrolment_group, entry)
            model = await hub.group(live["group"])
            live["members"] = sorted((model or {}).get("users") or [])
        except Refused as e:
            live["enrol_error"] = " ".join(e.problems)
        except HubAPIError as e:
            live["enrol_error"] = f"Could not read the group from the hub: {e}"
        return live

    def usage_and_activity(self, course_id: str, now: float):
        activity = read_activity(self.state.runtime_dir)
        return activity, view.usage_rows(self.state.week_totals(now, course_id))


class ArchiveHandler(InstructorHandler):
    @web.authenticated
    async def post(self, course_id: str):
        await self.entry(course_id)
        archived = self.get_body_argument("archived", "") == "1"
        try:
            await self.blocking(
                self.state.desk.set_archived,
                course_id,
                self.who,
                archived,
                self.get_body_argument("revision", ""),
            )
        except Refused as e:
            self.redirect_with_note(self.course_url(course_id), failed=" ".join(e.problems))
            return
        app_log.info(
            "%s: %s course %s", self.who.name, "archived" if archived else "restored", course_id
        )
        self.redirect_with_note(
            self.course_url(course_id),
            done=(
                f"Archived {course_id}: students no longer see it; running servers go on until "
                f"they stop."
                if archived
                else f"Restored {course_id}: enrolled students see it again."
            ),
        )


def parse_names(text: str, most: int = MAX_ENROL) -> list[str]:
    """User names from a pasted list: one per line, or separated by commas, semicolons or spaces (a
    CSV column of names works; quotes are dropped). Duplicates dropped, order kept; at most ``most``
    + 1 (the caller refuses a longer list without reading all of a huge one)."""
    names = {}
    for token in re.finditer(r"[^\s,;]+", text):
        name = token.group().strip("\"'")
        if name:
            names[name] = None
            if len(names) > most:
                break
    return list(names)


class EnrolHandler(InstructorHandler):
    @web.authenticated
    async def post(self, course_id: str):
        entry = await self.entry(course_id)
        action = self.get_body_argument("action", "add")
        names = parse_names(self.get_body_argument("names", ""))
        if action not in ("add", "remove") or not names:
            self.redirect_with_note(
                self.course_url(course_id), failed="Give at least one user name to enrol or remove."
            )
            return
        if len(names) > MAX_ENROL or any(len(n) > NAME_LIMIT for n in names):
            self.redirect_with_note(
                self.course_url(course_id),
                failed=(
                    f"At most {MAX_ENROL} names at once, each at most {NAME_LIMIT} characters."
                ),
            )
            return
        hub = HubAPI()
        try:
            group = await self.blocking(self.state.desk.enrolment_group, entry)
            model = await hub.group(group)
            if model is not None and model.get("roles"):
                # members of a group with roles get those roles: enrolling would hand out
                # permissions
                raise Refused(
                    400,
                    [
                        f"The group {group!r} carries hub roles ({', '.join(model['roles'])}); "
                        f"only an "
                        "admin changes its members."
                    ],
                )
            if action == "add":
                known = await hub.existing_users(names)
                unknown = [n for n in names if n not in known]
                if known:
                    if model is None:
                        await hub.create_group(group)
                    await hub.add_members(group, known)
                changed, verb = known, "enrolled"
            else:
                members = set((model or {}).get("users") or [])
                changed = [n for n in names if n in members]
                unknown = [n for n in names if n not in members]
                if changed:
                    await hub.remove_members(group, changed)
                verb = "unenrolled"
        except Refused as e:
            self.redirect_with_note(self.course_url(course_id), failed=" ".join(e.problems))
            return
        except HubAPIError as e:
            self.redirect_with_note(
                self.course_url(course_id), failed=f"The hub refused the change: {e}"
            )
            return
        if changed:
            await self.blocking(self.state.desk.record, course_id, self.who, verb, changed)
            app_log.info(
                "%s: %s %s in %s (group %s)",
                self.who.name,
                verb,
                ", ".join(changed),
                course_id,
                group,
            )
        parts = []
        if changed:
            parts.append(f"{verb.capitalize()} {len(changed)}: {', '.join(changed)}.")
        if unknown and action == "add":
            parts.append(
                f"Not enrolled (no such hub user yet: they log in once first): "
                f"{', '.join(unknown)}."
            )
        elif unknown:
            parts.append(f"Not in the course: {', '.join(unknown)}.")
        note = " ".join(parts)
        self.redirect_with_note(
            self.course_url(course_id), **({"done": note} if changed else {"failed": note})
        )


class StudentStopHandler(InstructorHandler):
    """Stop a server of this course (and only of this course: what the hub says it runs, not what
    the form says)."""

    @web.authenticated
    async def post(self, course_id: str):
        await self.entry(course_id)
        user = self.get_body_argument("user", "")
        server = self.get_body_argument("server", "")
        if not user or len(user) > NAME_LIMIT or len(server) > NAME_LIMIT:
            raise web.HTTPError(400, "expected a user and a server name")
        name = f"{user}/{server}" if server else user
        hub = HubAPI()
        try:
            model = ((await hub.user(user) or {}).get("servers") or {}).get(server)
            if not model or (model.get("user_options") or {}).get("course") != course_id:
                self.redirect_with_note(
                    self.course_url(course_id),
                    failed=f"{name} does not run a server of {course_id} (any more).",
                )
                return
            await hub.stop_server(user, server)
        except HubAPIError as e:
            self.redirect_with_note(
                self.course_url(course_id), failed=f"Could not stop {name}: {e}"
            )
            return
        app_log.info("%s: stopped %s (course %s)", self.who.name, name, course_id)
        self.redirect_with_note(self.course_url(course_id), done=f"Stopping {name}")


def course_routes(prefix: str, state) -> list:
    join = url_path_join
    return [
        (join(prefix, "courses/"), CourseListHandler, {"state": state}),
        (join(prefix, "courses", COURSE_ID + "/?"), CourseHandler, {"state": state}),
        (join(prefix, "courses", COURSE_ID, "archive"), ArchiveHandler, {"state": state}),
        (join(prefix, "courses", COURSE_ID, "enrol"), EnrolHandler, {"state": state}),
        (join(prefix, "courses", COURSE_ID, "stop"), StudentStopHandler, {"state": state}),
    ]
