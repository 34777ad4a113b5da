"""The admin's caps on what instructors may set from their course pages, and the fields only admins
change.

Pure: the only I/O is os.path.realpath on mount sources and data roots. Admins are not capped; the
course pages (admin/desk.py) apply these to instructors' edits after courses.parse_course has
accepted them.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .courses import normalize_mount_target
from .gpus import InventoryError, format_size, parse_size
from .options import shorten


# Environment names instructors may not set on top of the ones reserved for every course
# (spec.is_protected_env): each makes a program in the image load code, config or trust from where
# the course points it, or run it as a command. A course mounts data that instructors write, so any
# of these would run an instructor's code as every student (their files, their tokens) or let it
# read and change their traffic: OPENSSL_CONF=/data/dl/x.cnf loads a module from the data mount as
# soon as the server imports ssl. This is a denylist, not an allowlist, because instructors need
# names of their own choosing (DATA_DIR, HF_HOME, TORCH_HOME, OMP_NUM_THREADS, WANDB_MODE, ...); it
# denies whole families (prefixes, suffixes) where it can, so that a runtime's next variable is
# denied with its siblings. Names are compared in upper case: some programs read lower-case forms
# too (http_proxy, npm_config_*), and a denied name is no loss in either case. Admins are not capped
# (they may set any of these, and an instructor may keep such a value exactly as an admin set it).
@dataclass(frozen=True)
class EnvRule:
    why: str  # shown as "instructors may not set it ({why}); ask an admin"
    names: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()

    def matches(self, var: str) -> bool:
        var = var.upper()
        return var in self.names or var.startswith(self.prefixes) or var.endswith(self.suffixes)


INSTRUCTOR_ENV_RULES = (
    EnvRule(
        "the shell runs code or reads its settings from it at start-up or at each prompt",
        frozenset(
            {
                "ENV",
                "ZDOTDIR",
                "FPATH",
                "PROMPT_COMMAND",
                *("PS0", "PS1", "PS2", "PS3", "PS4"),  # prompts run $(...) in them
                "SHELLOPTS",
                "BASHOPTS",
                "INPUTRC",
                "FCEDIT",
            }
        ),
        ("BASH_",),  # BASH_ENV, BASH_LOADABLES_PATH, BASH_XTRACEFD, ...
    ),
    EnvRule(
        "Python, IPython, Jupyter or a Python tool loads code or config from it",
        frozenset({"MPLCONFIGDIR", "MATPLOTLIBRC"}),  # a matplotlibrc names a backend module
        # DASK_*: dask's config, whose preload settings run scripts; PYTEST_ADDOPTS: conftest.py
        (
            "PYTHON",
            "IPYTHON",
            "JUPYTER",
            "JPY",
            "PIP_",
            "CONDA",
            "MAMBA",
            "UV_",
            "PYTEST_",
            "DASK_",
        ),
    ),
    EnvRule(
        "git or ssh runs a program or reads config from it",
        prefixes=("GIT_", "SSH_"),  # GIT_CONFIG_*, GIT_EXEC_PATH, GIT_SSH_COMMAND, SSH_ASKPASS, ...
    ),
    EnvRule(
        "the runtime of another language loads code or options from it",
        frozenset(
            {
                "CLASSPATH",
                "R_HOME",
                "JULIA_DEPOT_PATH",  # startup.jl and packages
                "JULIA_LOAD_PATH",
                "JULIA_PROJECT",
                "JULIA_BINDIR",
                "TCLLIBPATH",
            }
        ),
        (
            "JAVA_",  # JAVA_TOOL_OPTIONS: -javaagent loads code into every JVM
            "_JAVA_",
            "JDK_",
            "SPARK_",  # SPARK_CONF_DIR: spark-env.sh is sourced
            "PYSPARK_",
            "HADOOP_",
            "PERL5",
            "PERLLIB",
            "RUBY",
            "GEM_",
            "NODE_",  # NODE_OPTIONS --require, NODE_PATH, NODE_EXTRA_CA_CERTS
            "NPM_CONFIG_",
            "YARN_",
            "R_PROFILE",
            "R_ENVIRON",
            "R_LIBS",
            "LUA_PATH",
            "LUA_CPATH",
            "LUA_INIT",
        ),
    ),
    EnvRule(
        "TLS libraries load modules, config or trusted certificates from it, or write their keys "
        "to it",
        frozenset(
            {
                "SSL_CERT_FILE",
                "SSL_CERT_DIR",
                "SSLKEYLOGFILE",
                "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
                "GNUPGHOME",
            }
        ),
        ("OPENSSL_",),  # OPENSSL_CONF, OPENSSL_MODULES, OPENSSL_ENGINES
        # REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, AWS_CA_BUNDLE, HTTPLIB2_CA_CERTS, GIT_SSL_CAINFO, ...
        ("_CA_BUNDLE", "_CA_CERTS", "_CAINFO", "_CAPATH"),
    ),
    EnvRule(
        "it sends students' web traffic through a proxy of the course's choosing",
        frozenset({"CURL_HOME", "WGETRC"}),  # their config files set proxies and certificates
        suffixes=("_PROXY",),  # HTTP_PROXY, https_proxy, ALL_PROXY, NO_PROXY, ...
    ),
    EnvRule(
        "programs run it as a command (a pager, an editor, a browser or a password prompt)",
        frozenset({"VISUAL"}),
        suffixes=("PAGER", "EDITOR", "BROWSER", "ASKPASS"),  # GIT_PAGER, R_BROWSER, SUDO_ASKPASS
    ),
    EnvRule(
        "an editor or less runs commands from it",
        frozenset(
            {
                "EXINIT",
                "VIM",
                "VIMINIT",
                "GVIMINIT",
                "VIMRUNTIME",
                "MYVIMRC",
                "MYGVIMRC",
                "EMACSLOADPATH",
                "EMACSPATH",
                "EMACSDATA",
                "LESS",
                "LESSOPEN",
                "LESSCLOSE",
                "LESSEDIT",
                "LESSSECURE",
            }
        ),
        ("LESSKEY",),
    ),
    EnvRule(
        "the C library, the terminal or the desktop loads code, data or host names from it",
        frozenset(
            {
                *("LOCPATH", "GCONV_PATH", "NLSPATH"),  # gconv modules are shared libraries
                *("TERMINFO", "TERMINFO_DIRS", "TERMCAP"),
                "HOSTALIASES",  # host names resolve where the course says
            }
        ),
        ("XDG_",),  # XDG_CONFIG_HOME, XDG_DATA_DIRS: every program's config and plugins
    ),
    EnvRule(
        "graphics, GPU or media libraries load drivers or plugins (shared libraries) from it",
        frozenset({"OCL_ICD_FILENAMES", "OCL_ICD_VENDORS"}),
        ("VK_", "__EGL_", "__GLX_", "LIBGL_"),  # Vulkan layers and ICDs, EGL/GLX vendor libraries
        ("_PLUGIN", "_PLUGINS", "_PLUGIN_PATH"),  # NCCL_NET_PLUGIN, QT_PLUGIN_PATH, ...
    ),
    EnvRule(
        "a compiler, make or LaTeX runs it, or a plugin or config it names, when a student builds "
        "something",
        frozenset(
            {
                *("CC", "CXX", "CPP", "FC", "F77", "F90", "CUDAHOSTCXX"),
                *("CFLAGS", "CXXFLAGS", "CPPFLAGS", "LDFLAGS"),  # -fplugin= loads a shared library
                *("NVCC_PREPEND_FLAGS", "NVCC_APPEND_FLAGS"),
                *("MAKEFILES", "MAKEFLAGS", "MFLAGS"),
                "TEXINPUTS",
            }
        ),
        ("CMAKE_", "TEXMF"),  # CMAKE_TOOLCHAIN_FILE; TEXMFCNF can turn on LaTeX's shell escape
    ),
    EnvRule(
        "a cloud or cluster client runs the commands its config names",
        frozenset(
            {
                "KUBECONFIG",
                "DOCKER_CONFIG",
                "AWS_CONFIG_FILE",
                "AWS_SHARED_CREDENTIALS_FILE",
                "BOTO_CONFIG",
                "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES",
            }
        ),
    ),
)


def instructor_env_denied(var: str) -> str:
    """Why instructors may not set the environment variable ``var`` ("" if they may)."""
    return next((rule.why for rule in INSTRUCTOR_ENV_RULES if rule.matches(var)), "")


# Who may use and who may manage a course: set by admins only (enrolment and ownership are access
# control).
OWNER_FIELDS = ("groups", "users", "instructors", "instructor_groups")
GROUP_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,30}\Z")
# A cap on how many allowed images a message lists: the rest are summed up ("and 7 more").
MAX_LISTED = 8


# ---- caps ----------------------------------------------------------------------------------------


def _limit_error(key: str, expected: str, value) -> ValueError:
    return ValueError(f"instructor_limits[{key!r}]: expected {expected}, got {shorten(value)}")


def _whole(key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _limit_error(key, "a whole number >= 0", value)
    return value


def _number(key: str, value, *, positive: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (positive and value == 0)
    ):
        raise _limit_error(key, "a number > 0" if positive else "a number >= 0", value)
    return value


def _size(key: str, value) -> int:
    try:
        return parse_size(value, key)
    except InventoryError:
        raise _limit_error(key, "a size such as 32G or a number of bytes", value) from None


def _images(key: str, value) -> tuple[str, ...]:
    """Image references from a list, or from a dict label -> image (the shape of allowed_images)."""
    items = list(value.values()) if isinstance(value, Mapping) else value
    if isinstance(items, (str, bytes)) or not isinstance(items, (list, tuple)):
        raise _limit_error(key, "a list of image references (or a dict label -> image)", value)
    for item in items:
        if not isinstance(item, str) or not item.strip() or any(c.isspace() for c in item):
            raise _limit_error(
                key, "image references such as 'quay.io/jupyter/scipy-notebook:2024-05-27'", item
            )
    return tuple(dict.fromkeys(items))  # duplicates dropped, order kept


def _roots(key: str, value) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise _limit_error(key, "a list of absolute host directories", value)
    for item in value:
        if not isinstance(item, str) or not os.path.isabs(item):
            raise _limit_error(key, "absolute host directories such as '/srv/datasets'", item)
    return tuple(dict.fromkeys(value))


def plain_number(value) -> str:
    """A number as a person writes it: 8, 1.5, 20 (no '.0' noise)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _list_short(values: Sequence[str], limit: int = MAX_LISTED) -> str:
    shown = [v if len(v) <= 60 else v[:59] + "…" for v in values[:limit]]
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(shown) + more


@dataclass(frozen=True)
class InstructorLimits:
    """The admin's caps on what instructors may set from the course pages
    (c.GPUDockerSpawner.instructor_limits). Admins are not capped. A key left out = no cap (the
    admin's own spawner defaults then apply to courses that leave the field out).

    ``images`` and ``data_roots`` are lists of what is allowed, so an empty one allows nothing (no
    image, no data mount): a forgotten setting must not open every image on Docker Hub or every host
    directory to instructors.
    """

    max_gpus: int | None = None  # gpus.default and gpus.max at most this
    max_mem_limit: int | None = None  # bytes, resources.mem_limit at most
    max_cpu_limit: float | None = None
    max_shm_size: int | None = None  # bytes
    max_weekly_hours: float | None = None  # gpus.weekly_hours at most
    images: tuple[str, ...] = ()  # image references instructors may put in a course
    # host dirs; every mount source must be inside one (realpath compare)
    data_roots: tuple[str, ...] = ()
    allow_reclaim_never: bool = False  # may an instructor set idle.reclaim: never
    # idle.minutes at most (else 'never' comes back as a year)
    max_idle_minutes: float | None = None
    # may a course mount data read-write (students could change it)
    allow_read_write_mounts: bool = False
    # container dirs course mounts go under (not over the image)
    mount_targets: tuple[str, ...] = ("/data",)
    group_prefix: str = "course-"  # new courses get the group f"{group_prefix}{id}"
    max_courses: int = 20  # courses one instructor may create

    @classmethod
    def from_config(
        cls, config: Mapping, *, default_images=(), default_data_roots=()
    ) -> InstructorLimits:
        """The caps from the admin's config dict. A wrong key or value raises ValueError naming it
        ("instructor_limits['max_gpus']: expected a whole number >= 0, got 'x'"): a typo must stop
        the service, not silently lift a cap."""
        if config is None:
            config = {}
        if not isinstance(config, Mapping):
            raise ValueError(f"instructor_limits: expected a dict of caps, got {shorten(config)}")
        allowed = sorted(f for f in cls.__dataclass_fields__)
        unknown = sorted(str(k) for k in config if k not in allowed)
        if unknown:
            raise ValueError(
                f"instructor_limits: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(allowed)}"
            )
        values: dict[str, object] = {}
        for key in ("max_gpus",):
            if config.get(key) is not None:
                values[key] = _whole(key, config[key])
        for key in ("max_mem_limit", "max_shm_size"):
            if config.get(key) is not None:
                values[key] = _size(key, config[key])
        if config.get("max_cpu_limit") is not None:
            values["max_cpu_limit"] = _number(
                "max_cpu_limit", config["max_cpu_limit"], positive=True
            )
        for key in ("max_weekly_hours", "max_idle_minutes"):
            if config.get(key) is not None:
                values[key] = _number(key, config[key])
        if "max_courses" in config:
            values["max_courses"] = _whole("max_courses", config["max_courses"])
        if "mount_targets" in config:
            values["mount_targets"] = _roots("mount_targets", config["mount_targets"])
        if "images" in config:
            values["images"] = _images("images", config["images"])
        # the images the hub already offers (gathered by the caller: skip what is not an image
        # reference)
        else:
            offered = (
                default_images.values() if isinstance(default_images, Mapping) else default_images
            )
            values["images"] = tuple(
                dict.fromkeys(
                    i
                    for i in offered
                    if isinstance(i, str) and i.strip() and not any(c.isspace() for c in i)
                )
            )
        values["data_roots"] = _roots(
            "data_roots",
            config["data_roots"] if "data_roots" in config else tuple(default_data_roots),
        )
        for key in ("allow_reclaim_never", "allow_read_write_mounts"):
            if key in config:
                if not isinstance(config[key], bool):
                    raise _limit_error(key, "True or False", config[key])
                values[key] = config[key]
        if "group_prefix" in config:
            prefix = config["group_prefix"]
            if not isinstance(prefix, str) or not (prefix == "" or GROUP_PREFIX_RE.match(prefix)):
                raise _limit_error(
                    "group_prefix",
                    "'' or lower-case letters, digits, - or _ (at most 31), "
                    "starting with a letter or digit",
                    prefix,
                )
            values["group_prefix"] = prefix
        return cls(**values)

    def describe(self) -> list[str]:
        """The caps in words, one line each, for the course pages: instructors see the limits before
        they hit them."""
        lines = []
        if self.max_gpus is not None:
            lines.append(
                "No GPUs: courses are CPU-only"
                if self.max_gpus == 0
                else f"At most {self.max_gpus} GPU{'' if self.max_gpus == 1 else 's'} per student"
            )
        if self.max_mem_limit is not None:
            lines.append(f"Memory at most {format_size(self.max_mem_limit)}")
        if self.max_cpu_limit is not None:
            lines.append(f"CPU at most {plain_number(self.max_cpu_limit)}")
        if self.max_shm_size is not None:
            lines.append(f"Shared memory at most {format_size(self.max_shm_size)}")
        if self.max_weekly_hours is not None:
            lines.append(
                f"At most {plain_number(self.max_weekly_hours)} GPU-hours per student per week"
            )
        lines.append(
            f"Images: {', '.join(self.images)}"
            if self.images
            else "Images: none yet (ask an admin to allow some)"
        )
        lines.append(
            f"Data mounts under: {', '.join(self.data_roots)}"
            if self.data_roots
            else "Data mounts: none allowed"
        )
        if self.data_roots:
            lines.append(
                f"Mounted under: {', '.join(self.mount_targets)}"
                + ("" if self.allow_read_write_mounts else ", read-only")
            )
        if self.max_idle_minutes is not None:
            lines.append(
                f"Idle GPUs reclaimed after at most {plain_number(self.max_idle_minutes)} minutes"
            )
        if not self.allow_reclaim_never:
            lines.append("idle.reclaim 'never' is not allowed")
        lines.append(f"At most {self.max_courses} courses per instructor")
        return lines


def _too_much(name: str, key: str, value: str, cap: str) -> str:
    return f"{name}: {key}: {value} is more than instructors may set ({cap}); ask an admin"


def _inside(path: str, roots: Sequence[str]) -> bool:
    return any(os.path.commonpath([root, path]) == root for root in roots)


def check_limits(data: dict, limits: InstructorLimits, name: str) -> list[str]:
    """Problems of an (already schema-valid, i.e. parse_course passed) course dict against the caps,
    each "{name}: {key}: {value} is more than instructors may set ({cap}); ask an admin" style, e.g.
    "dl.yaml: gpus.max: 4 is more than instructors may set (2); ask an admin". Fields a course
    leaves out are not checked: the admin's spawner defaults apply to them."""
    problems = []
    gpus = data.get("gpus") or {}
    if limits.max_gpus is not None:
        for key in ("default", "max"):
            if key in gpus and gpus[key] > limits.max_gpus:
                problems.append(
                    _too_much(name, f"gpus.{key}", str(gpus[key]), str(limits.max_gpus))
                )
    resources = data.get("resources") or {}
    for key, cap in (("mem_limit", limits.max_mem_limit), ("shm_size", limits.max_shm_size)):
        if cap is not None and key in resources:
            value = resources[key]
            try:
                size = parse_size(value, key)
            # parse_course refuses these; say so rather than let it through
            except InventoryError as e:
                problems.append(f"{name}: resources.{e}")
                continue
            if size > cap:
                shown = value if isinstance(value, str) else format_size(size)
                problems.append(_too_much(name, f"resources.{key}", shown, format_size(cap)))
    numeric_caps = (
        ("resources", resources, "cpu_limit", limits.max_cpu_limit),
        ("gpus", gpus, "weekly_hours", limits.max_weekly_hours),
    )
    for section_name, section, key, cap in numeric_caps:
        if cap is not None and key in section and section[key] > cap:
            problems.append(
                _too_much(
                    name, f"{section_name}.{key}", plain_number(section[key]), plain_number(cap)
                )
            )
    for i, image in enumerate(data.get("images") or []):
        ref = image.get("image")
        if ref not in limits.images:
            allowed = (
                f"use one of {_list_short(limits.images)}"
                if limits.images
                else "no image is open to instructors yet"
            )
            problems.append(
                f"{name}: images.{i}.image: {shorten(ref, 80)} is not an image instructors may "
                f"use; "
                f"{allowed}, or ask an admin"
            )
    roots = [os.path.realpath(r) for r in limits.data_roots]
    for i, mount in enumerate(data.get("mounts") or []):
        source = mount.get("source")
        # isabs first: realpath would read a relative path against the hub's working directory
        if not (
            isinstance(source, str)
            and os.path.isabs(source)
            and _inside(os.path.realpath(source), roots)
        ):
            where = (
                f"({', '.join(limits.data_roots)})"
                if limits.data_roots
                else "(none: ask an admin to set some)"
            )
            problems.append(
                f"{name}: mounts.{i}.source: {shorten(source, 80)} is outside the data roots "
                f"instructors may use {where}"
            )
        elif mount.get("read_only") is False and not limits.allow_read_write_mounts:
            problems.append(
                f"{name}: mounts.{i}.read_only: course data is mounted read-only (students could "
                "change or delete it otherwise); ask an admin"
            )
        target = normalize_mount_target(str(mount.get("target", "")))
        if not _inside(target, limits.mount_targets):
            problems.append(
                f"{name}: mounts.{i}.target: {shorten(target, 80)} must be under "
                f"{' or '.join(limits.mount_targets)} (a course mounts data, not parts of the "
                f"image)"
            )
    for var in data.get("env") or {}:
        why = instructor_env_denied(var) if isinstance(var, str) else ""
        if why:
            problems.append(
                f"{name}: env.{var[:60]}: instructors may not set it ({why}); ask an admin"
            )
    idle = data.get("idle") or {}
    if (
        limits.max_idle_minutes is not None
        and "minutes" in idle
        and idle["minutes"] > limits.max_idle_minutes
    ):
        problems.append(
            _too_much(
                name,
                "idle.minutes",
                plain_number(idle["minutes"]),
                plain_number(limits.max_idle_minutes),
            )
        )
    if idle.get("reclaim") == "never" and not limits.allow_reclaim_never:
        problems.append(
            f"{name}: idle.reclaim: 'never' is not allowed for instructors (idle servers would "
            f"hold "
            "their GPUs forever); use 'when_queued' or 'always', or ask an admin"
        )
    return problems


def _owner_value(value):
    """An owner list in comparable form: missing and [] are the same. Order counts: the first group
    is the one students are enrolled into."""
    return [] if value is None else value


def owner_field_changes(old: dict, new: dict, name: str) -> list[str]:
    """Messages for OWNER_FIELDS that differ (missing and [] are the same; order counts):
    "{name}: groups: set by an admin (who may use and manage a course); ask an admin to change
    it"."""
    return [
        f"{name}: {field}: set by an admin (who may use and manage a course); ask an admin to "
        f"change it"
        for field in OWNER_FIELDS
        if _owner_value(old.get(field)) != _owner_value(new.get(field))
    ]
