"""The instructors' course form: form <-> course dict, what an edit changed, and new courses.

Pure. Values the form cannot show (keys it has no field for) are copied from the file, and a field
left as it was keeps the file's value exactly (10.0 stays 10.0, "1024" stays a string). Caps:
course_limits.py; the YAML text: course_yaml.py.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from itertools import zip_longest

from .course_limits import InstructorLimits, plain_number
from .course_yaml import same_value, schema_ordered
from .courses import COURSE_SCHEMA, CourseError
from .options import shorten

_MISSING = object()


def _leaves(data, path: str = "") -> dict[str, object]:
    """Key path -> value, descending into mappings only (a list is one value)."""
    if isinstance(data, dict) and (data or not path):
        out: dict[str, object] = {}
        for k, v in data.items():
            out.update(_leaves(v, f"{path}.{k}" if path else str(k)))
        return out
    return {path: data}


def changed_fields(old: dict, new: dict) -> list[str]:
    """What an edit changed, one short line per leaf key path, sorted by path: "gpus.max: 2 → 1",
    "title: 'A' → 'B'", "env.FOO: added", "env.BAR: removed", "images: changed" (lists are not
    diffed). [] when nothing changed."""
    before, after = _leaves(old), _leaves(new)
    lines = []
    for path in sorted(set(before) | set(after)):
        if path not in before:
            lines.append(f"{path}: added")
        elif path not in after:
            lines.append(f"{path}: removed")
        elif not same_value(before[path], after[path]):
            if isinstance(before[path], list) or isinstance(after[path], list):
                lines.append(f"{path}: changed")
            else:
                lines.append(f"{path}: {shorten(before[path])} → {shorten(after[path])}")
    return lines


# ---- the HTML form -------------------------------------------------------------------------------

# form field -> (section, key, kind); kind "whole" (int), "number" (int or float), "text"
_SIMPLE_FIELDS = (
    ("gpus_default", "gpus", "default", "whole"),
    ("gpus_max", "gpus", "max", "whole"),
    ("gpus_policy", "gpus", "policy", "text"),
    ("gpus_max_users_per_gpu", "gpus", "max_users_per_gpu", "whole"),
    ("gpus_weekly_hours", "gpus", "weekly_hours", "number"),
    ("idle_minutes", "idle", "minutes", "number"),
    ("idle_warn_minutes", "idle", "warn_minutes", "number"),
    ("idle_reclaim", "idle", "reclaim", "text"),
    ("mem_limit", "resources", "mem_limit", "size"),
    ("cpu_limit", "resources", "cpu_limit", "number"),
    ("shm_size", "resources", "shm_size", "size"),
)
_WHOLE_RE = re.compile(r"[+-]?[0-9]{1,15}")
_NUMBER_RE = re.compile(
    r"[+-]?(?:[0-9]{1,15}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})(?:[eE][+-]?[0-9]{1,3})?"
)
_MOUNT_RW = " (read-write)"
_MOUNT_RO = " (read-only)"


def _render(value) -> str:
    """A value as the form shows it: '' for none, numbers without '.0' noise."""
    if value is None or value is _MISSING:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return plain_number(value) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def _section(data: dict, name: str) -> dict:
    value = data.get(name)
    return value if isinstance(value, dict) else {}


def _render_env(env) -> str:
    return "\n".join(f"{k}={v}" for k, v in env.items()) if isinstance(env, dict) else ""


def _render_mount(mount) -> str:
    if not isinstance(mount, dict):
        return shorten(mount)
    rw = _MOUNT_RW if mount.get("read_only") is False else ""
    return f"{mount.get('source', '')} -> {mount.get('target', '')}{rw}"


def _render_mounts(mounts) -> str:
    return "\n".join(_render_mount(m) for m in mounts) if isinstance(mounts, list) else ""


def form_from_data(data: dict) -> dict[str, object]:
    """Prefill values for the course form: strings (numbers without '.0' noise, '' where the file
    leaves a key out), ``images`` as [(image, label)], ``env`` as 'KEY=value' lines, ``mounts`` as
    'source -> target' lines (plus ' (read-write)' where read_only is false)."""
    gpus, idle, resources = (
        _section(data, "gpus"),
        _section(data, "idle"),
        _section(data, "resources"),
    )
    sections = {"gpus": gpus, "idle": idle, "resources": resources}
    form: dict[str, object] = {
        "title": _render(data.get("title")),
        "description": _render(data.get("description")),
        "images": [
            (_render(i.get("image")), _render(i.get("label")))
            for i in data.get("images") or []
            if isinstance(i, dict)
        ],
    }
    for field, section, key, _kind in _SIMPLE_FIELDS:
        form[field] = _render(sections[section].get(key))
    form["gpus_queue"] = _render(gpus.get("queue"))
    timeout = gpus.get("queue_timeout")
    form["gpus_queue_timeout_minutes"] = (
        _render(timeout / 60) if _is_number(timeout) else _render(timeout)
    )
    form["env"] = _render_env(data.get("env"))
    form["mounts"] = _render_mounts(data.get("mounts"))
    return form


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_number(text: str, kind: str, where: str, problems: list[str]):
    """``text`` as an int ("whole") or an int/float ("number"); None (and a problem) when it is not
    one."""
    if kind == "whole":
        if _WHOLE_RE.fullmatch(text):
            return int(text)
        problems.append(f"{where}: {shorten(text)} is not a whole number")
        return None
    if _NUMBER_RE.fullmatch(text):
        value = float(text)
        if math.isfinite(value):
            return int(value) if _WHOLE_RE.fullmatch(text) else value
    problems.append(f"{where}: {shorten(text)} is not a number")
    return None


def _image_slug(image: str) -> str:
    """A key for an image: its name without registry, path and tag
    ('ghcr.io/x/pytorch-notebook:24.08' -> 'pytorch-notebook'), in the characters a key allows."""
    name = image.split("@", 1)[0].rstrip("/").rsplit("/", 1)[-1].split(":", 1)[0]
    slug = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")[:64].rstrip("-_")
    return slug or "image"


def _unique(slug: str, used: set) -> str:
    candidate, n = slug, 2
    while candidate in used:
        suffix = f"-{n}"
        candidate, n = slug[: 64 - len(suffix)] + suffix, n + 1
    used.add(candidate)
    return candidate


def _form_images(raw_rows: Sequence[tuple[str, str]], base_images) -> list:
    """The images the form lists, keyed: an image the course had keeps its key (and the file's entry
    as it was when the label did not change); a new one gets a key made from its name, unique within
    the course."""
    rows = [(i.strip(), (label or "").strip()) for i, label in raw_rows]
    base = [b for b in base_images if isinstance(b, dict)] if isinstance(base_images, list) else []
    unused = list(range(len(base)))
    out: list[dict | None] = []
    used = set()
    pending = []
    for n, (image, label) in enumerate(rows):
        match = next((i for i in unused if base[i].get("image") == image), None)
        if match is None:
            out.append(None)
            pending.append(n)
            continue
        unused.remove(match)
        entry = copy.deepcopy(base[match])
        if _render(entry.get("label")).strip() != label:
            if label:
                entry["label"] = label
            else:
                entry.pop("label", None)
        used.add(entry.get("key"))
        out.append(entry)
    for n in pending:  # after the kept keys are known: a new image never takes a key in use
        image, label = rows[n]
        entry = {"key": _unique(_image_slug(image), used), "image": image}
        if label:
            entry["label"] = label
        out[n] = entry
    return out


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _form_env(text: str, problems: list[str]) -> dict:
    env: dict[str, str] = {}
    seen: dict[str, int] = {}
    for n, line in enumerate(_lines(text), 1):
        if not line.strip():
            continue
        name, eq, value = line.partition("=")
        name = name.strip()
        if not eq or not name:
            problems.append(f"env line {n}: expected NAME=value, got {shorten(line)}")
        elif name in seen:
            problems.append(
                f"env line {n}: {shorten(name)} is already set on line {seen[name]}; keep one"
            )
        else:
            seen[name] = n
            env[name] = value
    return env


def _form_mounts(text: str, base_mounts, problems: list[str]) -> list:
    """Mount lines; a line that reads as one of the course's mounts keeps that entry as the file has
    it."""
    base = [m for m in base_mounts if isinstance(m, dict)] if isinstance(base_mounts, list) else []
    unused = list(range(len(base)))
    mounts = []
    for n, line in enumerate(_lines(text), 1):
        line = line.strip()
        if not line:
            continue
        match = next((i for i in unused if _render_mount(base[i]) == line), None)
        if match is not None:
            unused.remove(match)
            mounts.append(copy.deepcopy(base[match]))
            continue
        read_only = True
        for suffix, ro in ((_MOUNT_RW, False), (_MOUNT_RO, True)):
            if line.endswith(suffix.strip()):
                line, read_only = line[: -len(suffix.strip())].rstrip(), ro
        source, arrow, target = (part.strip() for part in line.partition("->"))
        if not arrow or not source or not target or "->" in target:
            problems.append(
                f"mounts line {n}: expected 'source -> target' (add ' (read-write)' to allow "
                f"writing), "
                f"got {shorten(line)}"
            )
            continue
        mount = {"source": source, "target": target}
        if not read_only:
            mount["read_only"] = False
        mounts.append(mount)
    return mounts


def _set(data: dict, key, value, base: dict) -> None:
    """data[key] = value, where '' or an empty list/mapping means: leave the key out (the hub's
    default)."""
    if value in ("", None) or (
        isinstance(value, (dict, list)) and not value and not same_value(base.get(key), value)
    ):
        data.pop(key, None)
    else:
        data[key] = value


def data_from_form(form: Mapping[str, Sequence[str]], base: dict) -> tuple[dict, list[str]]:
    """The course dict an HTML form submission describes, and the problems of values that cannot be
    read ("gpus.max: 'two' is not a whole number", "env line 3: expected NAME=value", "mounts line
    2: expected 'source -> target'").

    ``form`` maps field name -> list of strings (tornado's body_arguments, decoded): the fields of
    form_from_data, but images as two parallel lists ``image`` and ``image_label``. A field the
    submission leaves out, or sends as form_from_data(base) shows it, keeps base's value exactly;
    every key the form has no field for (id, archived, OWNER_FIELDS, …) is copied from base. An
    empty field leaves the key out (the hub's default applies). Schema and caps are not checked
    here: callers run courses.parse_course and check_limits."""
    data = copy.deepcopy(base)
    shown = form_from_data(base)
    problems: list[str] = []

    def given(field: str) -> str | None:
        """The submitted text of ``field``; None when it is missing or reads as form_from_data(base)
        shows it (whitespace around it aside)."""
        values = form.get(field)
        if not values:
            return None
        text = values[0].replace("\r\n", "\n")  # the first, as the page shows a refused form again
        if text.strip() == str(shown[field]).strip():
            return None
        return text if field in ("description", "env", "mounts") else text.strip()

    title = given("title")
    if title is not None:
        _set(data, "title", title, base)
    description = given("description")
    if description is not None:
        _set(data, "description", description.strip(), base)
    if "image" in form or "image_label" in form:
        rows = [
            (i, label)
            for i, label in zip_longest(
                form.get("image", []), form.get("image_label", []), fillvalue=""
            )
            if (i or "").strip()
        ]
        if rows != shown["images"]:
            _set(data, "images", _form_images(rows, base.get("images")), base)

    sections = {name: dict(_section(base, name)) for name in ("gpus", "idle", "resources")}
    changed = set()
    for field, section, key, kind in _SIMPLE_FIELDS:
        text = given(field)
        if text is None:
            continue
        where = f"{section}.{key}"
        if kind in ("whole", "number") and text:
            value = _parse_number(text, kind, where, problems)
            if value is None:
                continue
        elif kind == "size" and text and _WHOLE_RE.fullmatch(text):
            value = int(text)  # a number of bytes
        else:
            value = text
        _set(sections[section], key, value, {})
        changed.add(section)
    queue = given("gpus_queue")
    if queue is not None:
        if queue.lower() in ("yes", "no", ""):
            _set(sections["gpus"], "queue", {"yes": True, "no": False}.get(queue.lower()), {})
            changed.add("gpus")
        else:
            problems.append(
                f"gpus.queue: {shorten(queue)} must be yes, no or empty (the hub's setting)"
            )
    timeout = given("gpus_queue_timeout_minutes")
    if timeout is not None:
        minutes = (
            _parse_number(timeout, "number", "gpus.queue_timeout (minutes)", problems)
            if timeout
            else ""
        )
        if minutes is not None:
            seconds = round(minutes * 60, 3) if minutes != "" else ""
            if isinstance(seconds, float) and seconds.is_integer():
                seconds = int(seconds)
            _set(sections["gpus"], "queue_timeout", seconds, {})
            changed.add("gpus")
    for section in sections:  # in this order: new sections are appended
        if section in changed:
            _set(data, section, sections[section], base)

    env = given("env")
    if env is not None:
        _set(data, "env", _form_env(env, problems), base)
    mounts = given("mounts")
    if mounts is not None:
        _set(data, "mounts", _form_mounts(mounts, base.get("mounts"), problems), base)
    return data, problems


# ---- new courses ---------------------------------------------------------------------------------


def new_course_data(
    course_id: str,
    title: str,
    *,
    template: dict | None,
    creator: str,
    creator_is_admin: bool,
    limits: InstructorLimits,
) -> dict:
    """A new course: a copy of ``template`` (a course dict) or, without one, a minimal CPU-only
    course with the first image instructors may use. It gets its own hub group,
    f"{limits.group_prefix}{course_id}", never the template's: enrolling students in one course must
    not change who may use another. The creator becomes an instructor unless they are an admin
    (admins manage every course anyway); the template's instructors and instructor groups stay,
    students (users) do not. Raises CourseError when there is neither a template nor an image
    instructors may use."""
    if template is not None:
        data = copy.deepcopy(template)
    else:
        if not limits.images:
            raise CourseError(
                [
                    f"{course_id}: no image is open to instructors yet; ask an admin to set "
                    "c.GPUDockerSpawner.instructor_limits['images'], or copy an existing course"
                ]
            )
        image = limits.images[0]
        max_gpus = 1 if limits.max_gpus is None else min(1, limits.max_gpus)
        data = {
            "id": course_id,
            "title": title,
            "images": [{"key": _image_slug(image), "image": image}],
            "gpus": {"default": 0, "max": max_gpus},
        }
    data["id"] = course_id
    data["title"] = title
    data.pop("archived", None)
    data.pop("users", None)
    data["groups"] = [f"{limits.group_prefix}{course_id}"]
    instructors = [i for i in data.get("instructors") or [] if isinstance(i, str)]
    if not creator_is_admin and creator not in instructors:
        instructors.append(creator)
    if instructors:
        data["instructors"] = instructors
    else:
        data.pop("instructors", None)
    return schema_ordered(data, COURSE_SCHEMA) if template is None else data
