"""Course environments: one YAML file per course, schema-checked, reloaded on change.

A course says which images its students may start, how many GPUs and under which policy, the container limits,
read-only data mounts and extra environment variables, and who may use it (JupyterHub groups or user names;
nobody listed means everyone). Every error names the file, the key and what is allowed. A file that turns
invalid keeps its last good version live, so a typo never takes a course away mid-semester.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import jsonschema

from .allocation import POLICIES
from .gpus import InventoryError, parse_size
from .spec import is_protected_env

log = logging.getLogger("jupyter_gpuspawn.courses")

COURSE_FILE_SUFFIXES = (".yaml", ".yml", ".json")
# Patterns end in \Z, not $: jsonschema applies them with re.search, where $ also matches before a final newline
# ("dl\n" would pass as an id). Same-class bug: kubespawner/dockerspawner regex advisories.
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}\Z"
SIZE = {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^\d+(\.\d+)?[KMGTkmgt]?i?[Bb]?\Z"}]}
# Environment variables a course may not set: the spawner's own, the NVIDIA runtime's, the loader's, the user's.
RESERVED_ENV = ("HOME", "USER", "PATH", "SHELL")
# Mount targets that would hide parts of the image the server needs.
FORBIDDEN_TARGETS = ("/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root", "/run", "/sbin",
                     "/sys", "/tmp", "/usr", "/var", "/home", "/opt/jupyter-gpuspawn", "/dev/shm")

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
        "images": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "image"],
                "properties": {
                    "key": {"type": "string", "pattern": ID_PATTERN},
                    "image": {"type": "string", "minLength": 1, "maxLength": 300, "pattern": r"^[^\s]+\Z"},
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
            "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z"},
            "additionalProperties": {"type": "string", "maxLength": 4096},
        },
    },
}


class CourseError(ValueError):
    """Problems with one course file; ``problems`` lists each, already prefixed with the file name."""

    def __init__(self, problems: List[str]):
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


@dataclass(frozen=True)
class Course:
    id: str
    title: str
    images: Tuple[CourseImage, ...]
    description: str = ""
    groups: Tuple[str, ...] = ()
    users: Tuple[str, ...] = ()
    gpu_default: int = 0
    gpu_max: int = 1
    policy: str = "exclusive"
    max_users_per_gpu: int = 1
    mem_limit: Optional[int] = None
    cpu_limit: Optional[float] = None
    shm_size: Optional[int] = None
    mounts: Tuple[Mount, ...] = ()
    env: Tuple[Tuple[str, str], ...] = ()
    source: str = ""
    any_image: bool = False  # only the implicit course of a hub with allowed_images = "*"

    def visible_to(self, username: str, groups, is_admin: bool = False) -> bool:
        if is_admin or not (self.groups or self.users):
            return True
        return username in self.users or bool(set(groups) & set(self.groups))

    def image_for(self, key: str) -> Optional[CourseImage]:
        return next((img for img in self.images if img.key == key), None)

    @classmethod
    def implicit(cls, *, default_image, allowed_images, default_gpus, max_gpus, policy, max_users_per_gpu):
        """The one environment of a hub without course files, from the spawner's own settings."""
        images = [CourseImage("", default_image, default_image)]
        if isinstance(allowed_images, dict):
            images += [CourseImage(k, v, k) for k, v in allowed_images.items()]
        return cls(
            id="", title="Default environment", images=tuple(images), gpu_default=default_gpus, gpu_max=max_gpus,
            policy=policy, max_users_per_gpu=max_users_per_gpu, any_image=allowed_images == "*",
        )


def _where(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _explain(error) -> str:
    """A schema error in words: the key, what is wrong, what is allowed."""
    where = _where(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return f"unknown key(s) {', '.join(map(repr, extra))} in {where}; allowed: {', '.join(allowed)}"
    if error.validator == "required":
        return f"{where}: {error.message.replace(' is a required property', '')} is required"
    if error.validator == "enum":
        return f"{where}: {error.instance!r} is not allowed; use one of {', '.join(map(repr, error.validator_value))}"
    if error.validator == "type":
        return f"{where}: expected {error.validator_value}, got {type(error.instance).__name__} {error.instance!r}"
    if error.validator == "pattern" and where.endswith(("id", "key")):
        return f"{where}: {error.instance!r} must be lower-case letters, digits, - or _ (at most 64)"
    if "propertyNames" in error.schema_path:
        return f"{where}: {error.instance!r} is not a valid environment variable name"
    if error.validator == "anyOf" and where.startswith("resources"):
        return f"{where}: {error.instance!r} must be a size such as 8G or 512M"
    return f"{where}: {error.message}"


def parse_course(data, path: str, data_roots=()) -> Course:
    """Validate one course file's data; raises CourseError listing every problem."""
    name = os.path.basename(path)
    validator = jsonschema.Draft7Validator(COURSE_SCHEMA)
    problems = [f"{name}: {_explain(e)}" for e in sorted(validator.iter_errors(data), key=lambda e: list(e.path))]
    if problems:
        raise CourseError(problems)

    gpus = data.get("gpus", {})
    gpu_max = gpus.get("max", gpus.get("default", 0))
    gpu_default = gpus.get("default", 0)
    if gpu_default > gpu_max:
        problems.append(f"{name}: gpus.default ({gpu_default}) is more than gpus.max ({gpu_max})")
    keys = [img["key"] for img in data["images"]]
    for key in sorted({k for k in keys if keys.count(k) > 1}):
        problems.append(f"{name}: images: key {key!r} is used twice")
    for var in data.get("env", {}):
        if is_protected_env(var) or var in RESERVED_ENV:
            problems.append(f"{name}: env.{var}: reserved, set by the spawner; remove it")
    mounts = []
    roots = [os.path.realpath(r) for r in data_roots]
    for i, m in enumerate(data.get("mounts", [])):
        where = f"{name}: mounts.{i}"
        source = os.path.realpath(m["source"])
        target = os.path.normpath(m["target"])
        if not os.path.isabs(m["source"]):
            problems.append(f"{where}.source: {m['source']!r} must be an absolute path")
        elif not any(os.path.commonpath([root, source]) == root for root in roots):
            allowed = ", ".join(data_roots) or "none configured: set GPUDockerSpawner.course_data_roots"
            problems.append(f"{where}.source: {m['source']!r} is outside the course data roots ({allowed})")
        if not os.path.isabs(target) or target in FORBIDDEN_TARGETS:
            problems.append(f"{where}.target: {m['target']!r} must be an absolute path that is not a system "
                            "directory (e.g. /data/course)")
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
        images=tuple(CourseImage(i["key"], i["image"], i.get("label", "")) for i in data["images"]),
        gpu_default=gpu_default,
        gpu_max=gpu_max,
        policy=gpus.get("policy", "exclusive"),
        max_users_per_gpu=gpus.get("max_users_per_gpu", 1 if gpus.get("policy", "exclusive") == "exclusive" else 2),
        mem_limit=sizes.get("mem_limit"),
        cpu_limit=resources.get("cpu_limit"),
        shm_size=sizes.get("shm_size"),
        mounts=tuple(mounts),
        env=tuple(sorted(data.get("env", {}).items())),
        source=path,
    )


def load_course_file(path: str, data_roots=()) -> Course:
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if path.endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:
        raise CourseError([f"{name}: cannot be read as {'JSON' if path.endswith('.json') else 'YAML'}: {e}"])
    if not isinstance(data, dict):
        raise CourseError([f"{name}: expected a mapping of keys (id, title, images, …) at the top level"])
    return parse_course(data, path, data_roots)


def course_files(directory: str) -> List[str]:
    return sorted(
        os.path.join(directory, f) for f in os.listdir(directory)
        if f.endswith(COURSE_FILE_SUFFIXES) and not f.startswith(".")
    )


@dataclass
class CatalogView:
    courses: Tuple[Course, ...]
    errors: Tuple[str, ...]


@dataclass
class _Entry:
    mtime: float
    course: Optional[Course]  # last good version, if any
    error: Optional[str] = None


class CourseCatalog:
    """The courses in a directory, reloaded when files change; invalid files keep their last good version."""

    def __init__(self, directory: str, data_roots=()):
        self.directory = directory
        self.data_roots = tuple(data_roots)
        self._entries: Dict[str, _Entry] = {}

    def refresh(self) -> CatalogView:
        """Re-read changed, new and removed files (blocking; cheap when nothing changed)."""
        try:
            paths = course_files(self.directory)
        except OSError as e:
            return CatalogView(self._good(), (f"course directory {self.directory} cannot be read: {e}",))
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

    def _good(self) -> Tuple[Course, ...]:
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

    def _errors(self) -> Tuple[str, ...]:
        errors = [e.error for e in self._entries.values() if e.error]
        first = {}
        for path, entry in sorted(self._entries.items()):
            if entry.course is None:
                continue
            if entry.course.id in first:
                errors.append(f"{os.path.basename(path)}: id {entry.course.id!r} is already used by "
                              f"{os.path.basename(first[entry.course.id])}; this file is ignored")
            else:
                first[entry.course.id] = path
        return tuple(errors)


def validate_directory(directory: str, data_roots=()) -> List[str]:
    """Every problem in every course file of ``directory`` (for `jupyter-gpuspawn validate`)."""
    catalog = CourseCatalog(directory, data_roots)
    view = catalog.refresh()
    problems = []
    for error in view.errors:
        problems.extend(error.splitlines())
    return problems
