"""Course environments: one YAML file per course, schema-checked, reloaded on change.

A course says which images its students may start, how many GPUs and under which policy, the
container limits, read-only data mounts and extra environment variables, and who may use it
(JupyterHub groups or user names; nobody listed means everyone). Every error names the file, the key
and what is allowed. A file that turns invalid keeps its last good version live, so a typo never
takes a course away mid-semester.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import posixpath
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import jsonschema

from .allocation import POLICIES
from .datafiles import MAX_FILE_BYTES, DataFileError, read_structured_file
from .gpus import InventoryError, parse_size
from .idle import RECLAIM_MODES
from .options import shorten
from .spec import is_protected_env

log = logging.getLogger("jupyter_gpuspawn.courses")

COURSE_FILE_SUFFIXES = (".yaml", ".yml", ".json")
# Patterns end in \Z, not $: jsonschema applies them with re.search, where $ also matches before a
# final newline ("dl\n" would pass as an id). Same-class bug: kubespawner/dockerspawner regex
# advisories.
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}\Z"
SIZE = {
    "anyOf": [
        {"type": "integer", "minimum": 1},
        {"type": "string", "pattern": r"^\d+(\.\d+)?[KMGTkmgt]?i?[Bb]?\Z"},
    ]
}
# Environment variables a course may not set: spec.is_protected_env (one list, shared with the
# spawner's get_env). Mount targets that would hide parts of the image the server needs (compared
# after normalize_mount_target).
FORBIDDEN_TARGETS = (
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib64",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/home",
    "/opt/jupyter-gpuspawn",
    "/dev/shm",
)
# Kernel and device trees: nothing may be mounted anywhere below them (a mount over /proc/sys or
# /dev/nvidia0 would change what the runtime and the server rely on).
FORBIDDEN_TARGET_TREES = ("/proc", "/sys", "/dev")
# A problem list longer than this is cut: one broken file must not flood the log or the admin's
# form.
MAX_PROBLEMS = 20
# More than a form can offer; the cap keeps checking a hostile 256 KiB file (thousands of entries)
# cheap.
MAX_IMAGES = 100
MAX_MOUNTS = 50

COURSE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "title", "images"],
    "properties": {
        "id": {"type": "string", "pattern": ID_PATTERN},
        "title": {"type": "string", "minLength": 1, "maxLength": 200},
        "description": {"type": "string", "maxLength": 5000},
        "groups": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "users": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "instructors": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "instructor_groups": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "archived": {"type": "boolean"},
        "images": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_IMAGES,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "image"],
                "properties": {
                    "key": {"type": "string", "pattern": ID_PATTERN},
                    "image": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 300,
                        "pattern": r"^[^\s]+\Z",
                    },
                    "label": {"type": "string", "maxLength": 200},
                },
            },
        },
        "gpus": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "default": {"type": "integer", "minimum": 0, "maximum": 64},
                "max": {"type": "integer", "minimum": 0, "maximum": 64},
                "policy": {"enum": list(POLICIES)},
                "max_users_per_gpu": {"type": "integer", "minimum": 1, "maximum": 64},
                "queue": {"type": "boolean"},
                "queue_timeout": {"type": "number", "minimum": 0, "maximum": 7 * 24 * 3600},
                "weekly_hours": {"type": "number", "minimum": 0, "maximum": 7 * 24 * 64},
            },
        },
        "idle": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "minutes": {"type": "number", "exclusiveMinimum": 0, "maximum": 365 * 24 * 60},
                "warn_minutes": {"type": "number", "minimum": 0, "maximum": 365 * 24 * 60},
                "reclaim": {"enum": list(RECLAIM_MODES)},
            },
        },
        "resources": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "mem_limit": SIZE,
                "cpu_limit": {"type": "number", "exclusiveMinimum": 0, "maximum": 1024},
                "shm_size": SIZE,
            },
        },
        "mounts": {
            "type": "array",
            "maxItems": MAX_MOUNTS,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["source", "target"],
                "properties": {
                    "source": {"type": "string", "minLength": 1},
                    "target": {"type": "string", "minLength": 1},
                    "read_only": {"type": "boolean"},
                },
            },
        },
        "env": {
            "type": "object",
            "propertyNames": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z"},
            "maxProperties": 200,
            "additionalProperties": {"type": "string", "maxLength": 4096},
        },
    },
}


class CourseError(ValueError):
    """Problems with one course file; ``problems`` lists each, already prefixed with the file
    name."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class CourseImage:
    key: str
    image: str
    label: str = ""


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = True


# the fields of a Course that a running server keeps (Course.kept_rules)
KEPT_RULES = ("title", "weekly_hours", "idle_minutes", "idle_warn_minutes", "idle_reclaim")


@dataclass(frozen=True)
class Course:
    id: str
    title: str
    images: tuple[CourseImage, ...]
    description: str = ""
    groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    instructors: tuple[str, ...] = ()  # users who manage this course (besides admins)
    instructor_groups: tuple[str, ...] = ()  # JupyterHub groups whose members manage it
    gpu_default: int = 0
    gpu_max: int = 1
    policy: str = "exclusive"
    max_users_per_gpu: int = 1
    queue: bool | None = None  # None: the spawner's gpu_queue
    queue_timeout: float | None = None  # seconds; None: the spawner's gpu_queue_timeout
    # GPU-hours per student per week; None: the spawner's gpu_hours_per_week
    weekly_hours: float | None = None
    idle_minutes: float | None = None  # None: the spawner's gpu_idle_minutes (and so on)
    idle_warn_minutes: float | None = None
    idle_reclaim: str | None = None
    mem_limit: int | None = None
    cpu_limit: float | None = None
    shm_size: int | None = None
    mounts: tuple[Mount, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    source: str = ""
    # hidden from every spawn form, kept on disk (instructors archive, and restore, courses)
    archived: bool = False
    any_image: bool = False  # only the implicit course of a hub with allowed_images = "*"

    def owned_by(self, username: str, groups, is_admin: bool = False) -> bool:
        """Whether this user may manage the course: admins own every course, instructors their
        own."""
        return (
            is_admin
            or username in self.instructors
            or bool(set(groups) & set(self.instructor_groups))
        )

    def visible_to(self, username: str, groups, is_admin: bool = False) -> bool:
        if self.archived:
            return False
        if self.owned_by(username, groups, is_admin) or not (self.groups or self.users):
            return True  # an instructor can start the course they teach
        return username in self.users or bool(set(groups) & set(self.groups))

    def image_for(self, key: str) -> CourseImage | None:
        return next((img for img in self.images if img.key == key), None)

    def kept_rules(self) -> dict:
        """What a running server keeps of its course (in the spawner's state, JSON): the rules it
        is judged by while it runs (idle GPUs, GPU-hour budget), as the file said at its start.
        None still means "the spawner's setting"."""
        return {name: getattr(self, name) for name in KEPT_RULES}

    @classmethod
    def from_kept_rules(cls, course_id: str, rules) -> Course | None:
        """The course a running server started in, as far as judging it goes, from
        ``kept_rules()`` (read back from state: checked again, a bad value falls back to the
        spawner's setting); None without kept rules (a server started before they were kept)."""
        if not course_id or not isinstance(rules, dict):
            return None

        def number(name, minimum, above=False):
            value = rules.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            if not math.isfinite(value) or value < minimum or (above and value == minimum):
                return None
            return value

        title = rules.get("title")
        reclaim = rules.get("idle_reclaim")
        return cls(
            id=course_id,
            title=title if isinstance(title, str) and title else course_id,
            images=(),
            weekly_hours=number("weekly_hours", 0),
            idle_minutes=number("idle_minutes", 0, above=True),
            idle_warn_minutes=number("idle_warn_minutes", 0),
            idle_reclaim=reclaim if reclaim in RECLAIM_MODES else None,
        )

    @classmethod
    def implicit(
        cls, *, default_image, allowed_images, default_gpus, max_gpus, policy, max_users_per_gpu
    ):
        """The one environment of a hub without course files, from the spawner's own settings."""
        images = [CourseImage("", default_image, default_image)]
        if isinstance(allowed_images, dict):
            images += [CourseImage(k, v, k) for k, v in allowed_images.items()]
        return cls(
            id="",
            title="Default environment",
            images=tuple(images),
            gpu_default=default_gpus,
            gpu_max=max_gpus,
            policy=policy,
            max_users_per_gpu=max_users_per_gpu,
            any_image=allowed_images == "*",
        )


def _where(error) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    # a key may be any length until checked
    return where if len(where) <= 120 else where[:119] + "…"


def _explain(error) -> str:
    """A schema error in words: the key, what is wrong, what is allowed. Values are quoted short (a
    file may hold a 200 KB string), and jsonschema's own message, which quotes the whole value, is
    cut."""
    where = _where(error)
    value = shorten(error.instance)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(shorten(k, 30) for k in set(error.instance) - set(allowed))
        more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
        return (
            f"unknown key(s) {', '.join(extra[:5])}{more} in {where}; allowed: {', '.join(allowed)}"
        )
    if error.validator == "required":
        return f"{where}: {error.message.replace(' is a required property', '')} is required"
    if error.validator == "enum":
        choices = ", ".join(map(repr, error.validator_value))
        return f"{where}: {value} is not allowed; use one of {choices}"
    if error.validator == "type":
        got = type(error.instance).__name__
        return f"{where}: expected {error.validator_value}, got {got} {value}"
    if error.validator == "pattern" and where.endswith(("id", "key")):
        return f"{where}: {value} must be lower-case letters, digits, - or _ (at most 64)"
    if "propertyNames" in error.schema_path:
        return f"{where}: {value} is not a valid environment variable name"
    if error.validator == "maxItems":
        found = len(error.instance)
        return f"{where}: at most {error.validator_value} entries are allowed, found {found}"
    if error.validator == "anyOf" and where.startswith("resources"):
        return f"{where}: {value} must be a size such as 8G or 512M"
    message = error.message if len(error.message) <= 200 else error.message[:199] + "…"
    return f"{where}: {message}"


def normalize_mount_target(target: str) -> str:
    """A container path in canonical form: ``//etc``, ``/etc/``, ``/./etc`` and ``/data/../etc`` are
    ``/etc``.

    posixpath.normpath keeps a leading ``//`` (POSIX leaves its meaning to the system), which Docker
    and the kernel read as ``/``; so leading slashes are collapsed here. Relative paths stay
    relative (callers refuse them).
    """
    normal = posixpath.normpath(target)
    if normal.startswith("/"):
        normal = "/" + normal.lstrip("/")
    return normal


def forbidden_target(target: str) -> bool:
    """Whether a (normalised) mount target would hide a system directory of the image."""
    return target in FORBIDDEN_TARGETS or any(
        target.startswith(tree + "/") for tree in FORBIDDEN_TARGET_TREES
    )


def _overlaps(a: str, b: str) -> bool:
    """One path is the other or lies inside it."""
    common = os.path.commonpath([a, b])
    return common in (a, b)


def conflicting_mounts(course_mounts: Iterable[Mount], admin_binds: Mapping) -> list[str]:
    """Messages for course mounts that would replace or re-mount an admin's volume.

    ``admin_binds`` is DockerSpawner's ``volume_binds`` ({host path or volume name: {"bind":
    container path, "mode": ...}}, templates already expanded); a plain container path as value is
    accepted too. A course mount conflicts when its source (already a realpath) is an admin volume's
    host path, whatever the modes (Docker keys binds by host path: the course's entry would replace
    the admin's, or make it read-write), lies inside one or holds one (the same files again, perhaps
    read-write, at another target), or when its target is an admin volume's container path (one
    would hide the other). Both sides are compared normalised. Reads symlinks of the admin's host
    paths (os.path.realpath); no other I/O.
    """
    admin = []
    for host, bind in admin_binds.items():
        container = bind.get("bind", "") if isinstance(bind, Mapping) else bind
        host_real = os.path.realpath(host) if os.path.isabs(host) else host
        admin.append((host, host_real, normalize_mount_target(container) if container else ""))
    problems = []
    for mount in course_mounts:
        target = normalize_mount_target(mount.target)
        for host, host_real, container in admin:
            if os.path.isabs(host_real) and _overlaps(mount.source, host_real):
                problems.append(
                    f"course mount {mount.source} -> {target}: {host} is an admin volume (mounted "
                    f"at "
                    f"{container}); a course cannot mount it, a part of it or a directory holding "
                    f"it "
                    "again, nor change its mode"
                )
            elif target == container:
                problems.append(
                    f"course mount {mount.source} -> {target}: {target} is already the target of "
                    f"the "
                    f"admin volume {host}"
                )
    return problems


def parse_course(data, path: str, data_roots=()) -> Course:
    """Validate one course file's data; raises CourseError listing every problem."""
    name = os.path.basename(path)
    validator = jsonschema.Draft7Validator(COURSE_SCHEMA)
    # islice: a list of 100 000 bad items is 100 000 errors; a few are enough to fix the file
    errors = list(itertools.islice(validator.iter_errors(data), MAX_PROBLEMS + 1))
    problems = [
        f"{name}: {_explain(e)}"
        for e in sorted(errors[:MAX_PROBLEMS], key=lambda e: [str(p) for p in e.path])
    ]
    if len(errors) > MAX_PROBLEMS:
        problems.append(f"{name}: (more problems not shown; fix these first)")
    if problems:
        raise CourseError(problems)

    for section in ("gpus", "idle", "resources"):
        for key, value in data.get(section, {}).items():
            # .nan passes every minimum and maximum
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(
                    f"{name}: {section}.{key}: {value} is not a number; write a plain number"
                )
    if problems:
        raise CourseError(problems)
    gpus = data.get("gpus", {})
    gpu_max = gpus.get("max", gpus.get("default", 0))
    gpu_default = gpus.get("default", 0)
    if gpu_default > gpu_max:
        problems.append(f"{name}: gpus.default ({gpu_default}) is more than gpus.max ({gpu_max})")
    idle = data.get("idle", {})
    if idle.get("warn_minutes", 0) > idle.get("minutes", float("inf")):
        problems.append(
            f"{name}: idle.warn_minutes ({idle['warn_minutes']:g}) is more than idle.minutes "
            f"({idle['minutes']:g}): the warning cannot start before the server is idle"
        )
    keys = [img["key"] for img in data["images"]]
    for key in sorted(k for k, n in Counter(keys).items() if n > 1):
        problems.append(f"{name}: images: key {key!r} is used twice")
    for var in data.get("env", {}):
        if is_protected_env(var):
            problems.append(
                f"{name}: env.{var}: reserved, set by the spawner or trusted by the runtime; "
                f"remove it"
            )
    mounts = []
    targets = {}
    roots = [os.path.realpath(r) for r in data_roots]
    for i, m in enumerate(data.get("mounts", [])):
        where = f"{name}: mounts.{i}"
        source = os.path.realpath(m["source"])
        target = normalize_mount_target(m["target"])
        if not os.path.isabs(m["source"]):
            problems.append(f"{where}.source: {shorten(m['source'])} must be an absolute path")
        elif not any(os.path.commonpath([root, source]) == root for root in roots):
            allowed = (
                ", ".join(data_roots) or "none configured: set GPUDockerSpawner.course_data_roots"
            )
            problems.append(
                f"{where}.source: {shorten(m['source'])} is outside the course data roots "
                f"({allowed})"
            )
        elif ":" in source:
            # Docker joins a bind as "source:target:mode": a colon in either would shift the fields.
            problems.append(f"{where}.source: {shorten(m['source'])} must not contain ':'")
        if not target.startswith("/") or forbidden_target(target):
            problems.append(
                f"{where}.target: {shorten(m['target'])} must be an absolute path that is not a "
                f"system "
                "directory (e.g. /data/course)"
            )
        elif ":" in target:
            problems.append(f"{where}.target: {shorten(m['target'])} must not contain ':'")
        elif target in targets:
            problems.append(
                f"{where}.target: {target} is already the target of mounts.{targets[target]}"
            )
        targets.setdefault(target, i)
        mounts.append(Mount(source, target, m.get("read_only", True)))
    resources = data.get("resources", {})
    sizes = {}
    for key in ("mem_limit", "shm_size"):
        if key in resources:
            try:
                sizes[key] = parse_size(resources[key], key)
            except InventoryError as e:
                problems.append(f"{name}: resources.{e}")
    if problems:
        raise CourseError(problems)
    return Course(
        id=data["id"],
        title=data["title"],
        description=data.get("description", ""),
        groups=tuple(data.get("groups", ())),
        users=tuple(data.get("users", ())),
        instructors=tuple(data.get("instructors", ())),
        instructor_groups=tuple(data.get("instructor_groups", ())),
        images=tuple(CourseImage(i["key"], i["image"], i.get("label", "")) for i in data["images"]),
        gpu_default=gpu_default,
        gpu_max=gpu_max,
        policy=gpus.get("policy", "exclusive"),
        max_users_per_gpu=gpus.get(
            "max_users_per_gpu", 1 if gpus.get("policy", "exclusive") == "exclusive" else 2
        ),
        queue=gpus.get("queue"),
        queue_timeout=gpus.get("queue_timeout"),
        weekly_hours=gpus.get("weekly_hours"),
        idle_minutes=idle.get("minutes"),
        idle_warn_minutes=idle.get("warn_minutes"),
        idle_reclaim=idle.get("reclaim"),
        mem_limit=sizes.get("mem_limit"),
        cpu_limit=resources.get("cpu_limit"),
        shm_size=sizes.get("shm_size"),
        mounts=tuple(mounts),
        env=tuple(sorted(data.get("env", {}).items())),
        source=path,
        archived=data.get("archived", False),
    )


def load_course_file(path: str, data_roots=()) -> Course:
    """Read, parse and validate one course file. The file may be at most MAX_FILE_BYTES (256 KiB)
    and may not use YAML anchors/aliases (see datafiles.py: an alias bomb would hang the hub's
    catalog refresh)."""
    name = os.path.basename(path)
    try:
        data = read_structured_file(path, kind="course files", max_bytes=MAX_FILE_BYTES)
    except DataFileError as e:
        raise CourseError([f"{name}: {e}"]) from None
    except OSError as e:
        raise CourseError([f"{name}: cannot be read: {e.strerror or e}"]) from None
    if not isinstance(data, dict):
        raise CourseError(
            [f"{name}: expected a mapping of keys (id, title, images, …) at the top level"]
        )
    return parse_course(data, path, data_roots)


def course_files(directory: str) -> list[str]:
    return sorted(
        os.path.join(directory, f)
        for f in os.listdir(directory)
        if f.endswith(COURSE_FILE_SUFFIXES) and not f.startswith(".")
    )


@dataclass
class CatalogView:
    courses: tuple[Course, ...]
    errors: tuple[str, ...]


@dataclass
class _Entry:
    mtime: float
    course: Course | None  # last good version, if any
    error: str | None = None


class CourseCatalog:
    """The courses in a directory, reloaded when files change; invalid files keep their last good
    version."""

    def __init__(self, directory: str, data_roots=()):
        self.directory = directory
        self.data_roots = tuple(data_roots)
        self._entries: dict[str, _Entry] = {}

    def refresh(self) -> CatalogView:
        """Re-read changed, new and removed files (blocking; cheap when nothing changed)."""
        try:
            paths = course_files(self.directory)
        except OSError as e:
            return CatalogView(
                self._good(), (f"course directory {self.directory} cannot be read: {e}",)
            )
        for gone in set(self._entries) - set(paths):
            log.info("course file %s removed", gone)
            del self._entries[gone]
        for path in paths:
            try:
                mtime = os.stat(path).st_mtime_ns
            except OSError:
                continue
            entry = self._entries.get(path)
            if entry is not None and entry.mtime == mtime:
                continue
            try:
                course = load_course_file(path, self.data_roots)
                self._entries[path] = _Entry(mtime, course)
                log.info("course %s loaded from %s", course.id, path)
            except CourseError as e:
                kept = entry.course if entry else None
                self._entries[path] = _Entry(mtime, kept, str(e))
                log.error("%s%s", e, " (keeping its last good version)" if kept else "")
        return CatalogView(self._good(), self._errors())

    def _good(self) -> tuple[Course, ...]:
        courses, seen = [], {}
        for path, entry in sorted(self._entries.items()):
            course = entry.course
            if course is None:
                continue
            if course.id in seen:
                continue  # reported by _errors
            seen[course.id] = path
            courses.append(course)
        return tuple(sorted(courses, key=lambda c: (c.title.lower(), c.id)))

    def _errors(self) -> tuple[str, ...]:
        errors = [e.error for e in self._entries.values() if e.error]
        first = {}
        for path, entry in sorted(self._entries.items()):
            if entry.course is None:
                continue
            if entry.course.id in first:
                errors.append(
                    f"{os.path.basename(path)}: id {entry.course.id!r} is already used by "
                    f"{os.path.basename(first[entry.course.id])}; this file is ignored"
                )
            else:
                first[entry.course.id] = path
        return tuple(errors)


def validate_directory(directory: str, data_roots=()) -> list[str]:
    """Every problem in every course file of ``directory`` (for `jupyter-gpuspawn validate`)."""
    catalog = CourseCatalog(directory, data_roots)
    view = catalog.refresh()
    problems = []
    for error in view.errors:
        problems.extend(error.splitlines())
    return problems
