"""The instructors' course desk: which course files a user may manage, and every change to them
(blocking calls).

A change goes live only when it is a valid course (the course schema, as `jupyter-gpuspawn validate`
checks it) within the admin's caps (instructor_limits; admins are not capped), never changes who may
use or manage the course (admins only), and was made on the version of the file the editor loaded:
the store's compare-and-swap refuses the second of two concurrent saves, and the history says who
made the first. Every change is recorded in the usage database. The web handlers (courses.py) run
these calls in a worker thread.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import posixpath
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ..course_edit import changed_fields, new_course_data
from ..course_limits import InstructorLimits, check_limits, owner_field_changes
from ..course_store import CourseConflict, CourseStore, StoredCourse, normalized_text
from ..course_yaml import merge_yaml, same_value
from ..courses import (
    COURSE_FILE_SUFFIXES,
    ID_PATTERN,
    Course,
    CourseError,
    course_files,
    parse_course,
)
from ..datafiles import DataFileError, parse_text
from ..usage import UsageDB

log = logging.getLogger("jupyter_gpuspawn.admin")


# sections whose values an instructor may keep as an admin set them, even past a cap
KEPT_SECTIONS = ("gpus", "resources", "idle")
# capped fields a course may leave out, so that the hub's default applies -> the cap on them
DEFAULTED = {
    "gpus.weekly_hours": "max_weekly_hours",
    "resources.mem_limit": "max_mem_limit",
    "resources.cpu_limit": "max_cpu_limit",
    "resources.shm_size": "max_shm_size",
    "idle.minutes": "max_idle_minutes",
}


# what the history and the page say of a YAML edit that changed no value
LAYOUT_ONLY = "comments or layout only"


def same_layout(typed: str, stored: str) -> bool:
    """Whether the YAML view's ``typed`` text would write ``stored`` again: the store writes Unix
    line ends and a final newline, and a browser drops a textarea's first newline."""
    return normalized_text(typed).lstrip("\n") == normalized_text(stored).lstrip("\n")


class Refused(Exception):
    """A request the desk will not carry out; ``problems`` say what to fix, ``status`` is the HTTP
    status."""

    def __init__(self, status: int, problems: Sequence[str]):
        super().__init__("; ".join(problems))
        self.status = status
        self.problems = list(problems)


@dataclass(frozen=True)
class Who:
    """The signed-in user, as the hub's OAuth says."""

    name: str
    groups: tuple[str, ...] = ()
    admin: bool = False


@dataclass
class Entry:
    """One course file: its text, its data if it parses, the course if it is valid, and what is
    wrong if not."""

    id: str
    stored: StoredCourse
    data: dict | None
    course: Course | None
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return os.path.basename(self.stored.path)

    @property
    def title(self) -> str:
        """The title, or the id when the file has none that is a string (a hand-edited `title: 101`
        or `title: 2024-09-01` reads as a number or a date; the list must still sort)."""
        title = (self.data or {}).get("title")
        return title if isinstance(title, str) and title.strip() else self.id

    @property
    def archived(self) -> bool:
        return bool((self.data or {}).get("archived"))

    def owned_by(self, who: Who) -> bool:
        """Admins own every course; instructors the files naming them (read from the data even when
        the file is invalid, so an instructor can repair their own course)."""
        if who.admin:
            return True
        data = self.data or {}
        return who.name in _names(data.get("instructors")) or bool(
            set(who.groups) & set(_names(data.get("instructor_groups")))
        )

    @property
    def groups(self) -> list[str]:
        groups = (self.data or {}).get("groups")
        return [g for g in groups if isinstance(g, str)] if isinstance(groups, list) else []


class CourseDesk:
    def __init__(
        self,
        courses_dir: str,
        data_roots: Sequence[str],
        limits: InstructorLimits,
        usage_db_url: str,
        creator_groups: Sequence[str] = (),
        defaults: Mapping[str, object] | None = None,
    ):
        self.store = CourseStore(courses_dir)
        self.creator_groups = frozenset(creator_groups)
        # what the hub applies to a course that leaves a capped field out ("resources.mem_limit":
        # "4G", None: no limit): removing the field must not lift the cap
        self.defaults = dict(defaults or {})
        self.data_roots = tuple(data_roots)
        self.limits = limits
        self.usage_db_url = usage_db_url
        # (path, revision) -> what parsing that text gave; replaced whole by each entries()
        self._parsed: dict[tuple[str, str], tuple[dict | None, Course | None, list[str]]] = {}

    # ---- reading ---------------------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """Every course file of the directory, read anew; parsing is kept per (path, revision), so a
        page of a hub with hundreds of courses parses only the files that changed."""
        entries, parsed = [], {}
        for stored in self.store.files():
            key = (stored.path, stored.revision)
            data, course, problems = parsed[key] = self._parsed.get(key) or self._parse(stored)
            name = os.path.basename(stored.path)
            course_id = (
                data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else ""
            )
            # a copy of the data: callers may change theirs; the cached one stays as parsed
            entry = Entry(
                course_id or posixpath.splitext(name)[0],
                stored,
                copy.deepcopy(data),
                course,
                list(problems),
            )
            entries.append(entry)
        self._parsed = parsed  # files gone or changed drop out
        return sorted(entries, key=lambda e: (e.archived, e.title.lower(), e.id))

    def _parse(self, stored: StoredCourse) -> tuple[dict | None, Course | None, list[str]]:
        name = os.path.basename(stored.path)
        data, course, problems = None, None, []
        try:
            data = parse_text(
                stored.text, as_json=stored.path.endswith(".json"), kind="course files"
            )
            if not isinstance(data, dict):
                raise DataFileError(
                    "expected a mapping of keys (id, title, images, …) at the top level"
                )
            course = parse_course(data, stored.path, self.data_roots)
        except DataFileError as e:
            data, problems = None, [f"{name}: {e}"]
        except CourseError as e:
            problems = e.problems
        return data, course, problems

    def mine(self, who: Who) -> list[Entry]:
        return [e for e in self.entries() if e.owned_by(who)]

    def may_create(self, who: Who, mine: Sequence[Entry]) -> bool:
        """Admins, members of course_creator_groups, and instructors of a course may create
        courses."""
        return who.admin or bool(self.creator_groups & set(who.groups)) or bool(mine)

    def entry(self, course_id: str, who: Who) -> Entry:
        """The course ``course_id`` if ``who`` manages it: 404 when there is none, 403 when it is
        someone else's."""
        matches = [e for e in self.entries() if e.id == course_id]
        if matches and matches[0].owned_by(who):
            return matches[0]
        if not matches and who.admin:
            raise Refused(404, [f"There is no course {course_id!r}."])
        # the same answer whether it exists or not: instructors learn nothing about others' courses
        raise Refused(
            403, [f"You do not manage a course {course_id!r}; its instructors and the admins do."]
        )

    # ---- changing --------------------------------------------------------------------------------
    def check(self, entry: Entry, new: dict, who: Who) -> Course:
        """The course ``new`` describes, if it may replace ``entry`` for ``who``; Refused(400)
        listing every problem otherwise."""
        problems = []
        if new.get("id") != entry.id:
            problems.append(
                f"{entry.name}: id: a course keeps its id ({entry.id}); copy it to make a new one"
            )
        if not who.admin:
            problems += owner_field_changes(entry.data or {}, new, entry.name)
        try:
            course = parse_course(new, entry.stored.path, self.data_roots)
        except CourseError as e:
            raise Refused(400, problems + e.problems) from None
        if not who.admin:
            problems += self.over_caps(entry.data or {}, new, entry.name)
        if problems:
            raise Refused(400, problems)
        return course

    def over_caps(self, old: dict, new: dict, name: str) -> list[str]:
        """What ``new`` sets past the caps that ``old`` did not already hold. A value an admin set
        past a cap may stay exactly as it is (an instructor can still edit the title); any change to
        it, and anything new, is checked. A capped field left out gets the hub's default, which must
        be within the cap too."""
        delta = copy.deepcopy(new)
        problems = []
        for section in KEPT_SECTIONS + ("env",):
            before = old.get(section) if isinstance(old.get(section), dict) else {}
            after = delta.get(section) or {}
            for key in [k for k in after if k in before and same_value(before[k], after[k])]:
                del after[key]  # kept as it was
        for path, cap in DEFAULTED.items():
            section, key = path.split(".")
            before = old.get(section) if isinstance(old.get(section), dict) else {}
            if (
                key in before
                and key not in (new.get(section) or {})
                and getattr(self.limits, cap) is not None
            ):
                default = self.defaults.get(path)
                if default is None:
                    problems.append(
                        f"{name}: {path}: leaving it out lifts the limit (the hub sets none); keep "
                        f"a "
                        "value within the cap"
                    )
                else:
                    delta.setdefault(section, {})[key] = default
        for key in ("images", "mounts"):
            delta[key] = [
                item
                for item in delta.get(key) or []
                if not any(same_value(item, kept) for kept in _list(old.get(key)))
            ]
        return problems + check_limits(delta, self.limits, name)

    def save(
        self,
        course_id: str,
        who: Who,
        new: dict,
        revision: str,
        text: str | None = None,
        action: str = "edited",
    ) -> tuple[Entry, list[str]]:
        """Write ``new`` (``text``: as typed in the YAML view; otherwise the old file with only the
        changed values replaced, comments kept) if it was made on ``revision``. Returns the new
        entry and what changed."""
        entry = self.entry(course_id, who)
        self.check(entry, new, who)
        changes = changed_fields(entry.data or {}, new)
        if not changes:
            # the YAML view's text may change only comments or layout: an edit too, kept as typed
            if (
                text is None
                or entry.stored.path.endswith(".json")
                or same_layout(text, entry.stored.text)
            ):
                return entry, []
            changes = [LAYOUT_ONLY]
        if entry.stored.path.endswith(".json"):  # the catalog reads .json files as JSON
            text = json.dumps(new, indent=2, ensure_ascii=False)
        elif text is None:
            text = merge_yaml(entry.stored.text if entry.data is not None else "", new)
        try:
            stored = self.store.replace(entry.stored.path, text, revision)
        except CourseConflict as e:
            raise Refused(409, [self.conflict_message(course_id, e.current)]) from None
        except ValueError as e:  # a symlinked file, or one that is not ours to replace
            raise Refused(400, [f"{entry.name}: {e}"]) from None
        self.record(course_id, who, action, changes, stored.revision)
        return self.entry(course_id, who), changes

    def create(self, who: Who, course_id: str, title: str, template_id: str = "") -> Entry:
        course_id, title = course_id.strip(), title.strip()
        mine = self.mine(who)
        if not self.may_create(who, mine):
            raise Refused(
                403, ["Creating courses is for admins, instructors and the course_creator_groups."]
            )
        if (
            not who.admin
            and sum(who.name in _names((e.data or {}).get("instructors")) for e in mine)
            >= self.limits.max_courses
        ):
            raise Refused(
                400,
                [
                    f"You manage {self.limits.max_courses} courses already, the most an admin "
                    f"allows; "
                    "archive one or ask an admin."
                ],
            )
        if not re.match(ID_PATTERN, course_id):
            raise Refused(
                400,
                [
                    f"id: {course_id[:64]!r} must be lower-case letters, digits, - or _ (at most "
                    f"64), "
                    "starting with a letter or digit"
                ],
            )
        if not title:
            raise Refused(400, ["title: a course needs a title"])
        entries = self.entries()
        taken = [
            os.path.join(self.store.directory, course_id + suffix)
            for suffix in COURSE_FILE_SUFFIXES
        ]
        if any(e.id == course_id for e in entries) or any(os.path.lexists(p) for p in taken):
            raise Refused(400, [f"id: a course {course_id!r} exists already; choose another id"])
        # a file ml_2024.yaml that says `id: ml` but no longer parses is known here only as
        # ml_2024, while the hub serves its last good version: a new ml.yaml would replace it there
        unknown = self.unreadable(entries, ids=True)
        if unknown:
            raise Refused(
                400,
                [
                    f"{unknown} so it is unknown which course id the hub still serves from its "
                    "last good version, and a new course could take it over; new courses wait "
                    "until an admin fixes that."
                ],
            )
        template = None
        if template_id:
            template = self.entry(template_id, who).data  # only a course one manages is a template
            if template is None:
                raise Refused(
                    400, [f"The course {template_id!r} cannot be read; fix it before copying it."]
                )
        if not self.limits.images and template is None:
            raise Refused(
                400,
                [
                    "No image is open to instructors yet: ask an admin to set "
                    "c.GPUDockerSpawner.instructor_limits['images']."
                ],
            )
        data = new_course_data(
            course_id,
            title,
            template=template,
            creator=who.name,
            creator_is_admin=who.admin,
            limits=self.limits,
        )
        path = self.store.path_for(course_id)
        name = os.path.basename(path)
        try:
            parse_course(data, path, self.data_roots)
        except CourseError as e:
            raise Refused(400, e.problems) from None
        if not who.admin:
            problems = check_limits(data, self.limits, name)
            if problems:
                raise Refused(
                    400,
                    problems + ["Copy a course within the caps, or start from the blank template."],
                )
        try:
            stored = self.store.create(name, merge_yaml("", data))
        except FileExistsError:
            raise Refused(400, [f"id: the file {name} exists already; choose another id"]) from None
        summary = [f"copied from {template_id}"] if template_id else ["from the blank template"]
        self.record(course_id, who, "created", summary, stored.revision)
        return self.entry(course_id, who)

    def set_archived(self, course_id: str, who: Who, archived: bool, revision: str) -> Entry:
        entry = self.entry(course_id, who)
        if entry.data is None:
            raise Refused(400, entry.problems or [f"{entry.name} cannot be read"])
        new = dict(entry.data)
        if archived:
            new["archived"] = True
        else:
            new.pop("archived", None)
        entry, _ = self.save(
            course_id, who, new, revision, action="archived" if archived else "restored"
        )
        return entry

    # ---- history ---------------------------------------------------------------------------------
    def record(
        self, course_id: str, who: Who, action: str, summary: Sequence[str], revision: str = ""
    ) -> bool:
        """Add a change to the history; False (logged) when the usage database cannot take it: the
        change itself stands, the page says the history missed it."""
        try:
            db = UsageDB(self.usage_db_url)
            try:
                db.record_course_change(
                    course_id, who.name, action, list(summary), revision, now=time.time()
                )
            finally:
                db.dispose()
            return True
        except Exception as e:
            log.error(
                "course %s: %s by %s not recorded in the history: %s",
                course_id,
                action,
                who.name,
                e,
            )
            return False

    def history(self, course_id: str, limit: int = 20) -> list[dict] | None:
        """Newest first; None when the usage database cannot be read."""
        try:
            db = UsageDB(self.usage_db_url)
            try:
                return db.course_changes(course_id, limit)
            finally:
                db.dispose()
        except Exception as e:
            log.warning("course history unavailable: %s", e)
            return None

    def conflict_message(self, course_id: str, current: StoredCourse | None) -> str:
        if current is None:
            return "This course file was removed meanwhile; your edit was not saved."
        change = None
        try:
            db = UsageDB(self.usage_db_url)
            try:
                change = db.change_for_revision(course_id, current.revision)
            finally:
                db.dispose()
        except Exception:
            pass
        if change:
            who, when = change["user"], change["at"]
        else:
            who, when = "someone editing the file on the hub host", current.mtime
        return (
            f"Changed by {who} at {datetime.fromtimestamp(when).strftime('%Y-%m-%d %H:%M:%S')} "
            "after you opened it; nothing was saved. Your edit is kept below and the current "
            "version of the file is shown under it: save again to replace it with your edit, or "
            "reload the page to start from it."
        )

    def unreadable(self, entries: Sequence[Entry], ids: bool = False) -> str:
        """Empty when the desk knows every course file of the directory; otherwise "a.yaml cannot be
        read," or "a.yaml and b.yaml cannot be read," naming those it cannot read or parse (and,
        with ``ids``, those whose id is not a string). The hub may still serve their last good
        version, whose id and groups are then unknown here."""
        known = {
            e.stored.path
            for e in entries
            if e.data is not None and (not ids or isinstance(e.data.get("id"), str))
        }
        names = [os.path.basename(p) for p in course_files(self.store.directory) if p not in known]
        if not names:
            return ""
        if len(names) > 5:
            names = names[:4] + [f"{len(names) - 4} more files"]
        listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
        return f"{listed} cannot be read,"

    def enrolment_group(self, entry: Entry) -> str:
        """The hub group students of this course join: its first group, if no other course file uses
        it."""
        if not entry.groups:
            raise Refused(
                400,
                [
                    "This course is open to everyone (it names no group); an admin sets its group "
                    "in "
                    "the course file before students can be enrolled."
                ],
            )
        group = entry.groups[0]
        if group in self.creator_groups or group in (
            _names((entry.data or {}).get("instructor_groups"))
        ):
            raise Refused(
                400,
                [
                    f"The group {group!r} makes its members instructors; only an admin changes who "
                    f"is "
                    "in it."
                ],
            )
        entries = self.entries()
        unknown = self.unreadable(entries)
        if unknown:  # the hub may still serve its last good version: its groups are unknown
            raise Refused(
                400,
                [
                    f"{unknown} so it is unknown whether it uses the group {group!r} too; "
                    "enrolment waits until an admin fixes that."
                ],
            )
        for other in entries:
            if other.id != entry.id and (
                group in other.groups or group in _names(other.data.get("instructor_groups"))
            ):
                raise Refused(
                    400,
                    [
                        f"The group {group!r} is also used by the course {other.id!r}: enrolling "
                        f"here "
                        "would change that course too. Ask an admin to give this course its own "
                        "group."
                    ],
                )
        return group


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _names(value) -> list[str]:
    """The strings of a list of names read from a file that may be hand-edited wrongly (`[1]`,
    `[{a: 1}]`, `[[a]]`, a bare string): anything else names no one."""
    return [v for v in _list(value) if isinstance(v, str)]
