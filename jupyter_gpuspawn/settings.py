"""GPUDockerSpawner's own settings (``c.GPUDockerSpawner.…``), kept apart from the spawner's
logic."""

from __future__ import annotations

import os

from jupyterhub.traitlets import ByteSpecification, Callable
from traitlets import (
    Bool,
    CaselessStrEnum,
    Dict,
    Float,
    Int,
    List,
    Tuple,
    Unicode,
    default,
    validate,
)
from traitlets.config import LoggingConfigurable

from .allocation import POLICIES
from .budget import WeekStartError, parse_week_start
from .gpus import INVENTORY_KINDS
from .idle import RECLAIM_MODES

UID_MAP_NAME = "jupyter_gpuspawn_uids.json"
RUNTIME_DIR_NAME = "jupyter_gpuspawn"
USAGE_DB_NAME = "jupyter_gpuspawn_usage.sqlite"


def hub_data_path(config, name: str) -> str:
    """Absolute path of ``name`` beside the hub's sqlite file, else in the hub's working
    directory."""
    hub_config = config.JupyterHub if "JupyterHub" in config else {}
    db_url = str(hub_config.get("db_url", "sqlite:///jupyterhub.sqlite"))
    directory = os.getcwd()
    if db_url.startswith("sqlite:///"):
        # sqlite:////abs/x.sqlite -> /abs/x.sqlite
        db_path = db_url[len("sqlite:///") :].split("?", 1)[0]
        if db_path and db_path != ":memory:":
            directory = os.path.dirname(os.path.abspath(db_path))
    return os.path.join(directory, name)


def default_uid_map_file(config) -> str:
    return hub_data_path(config, UID_MAP_NAME)


def default_usage_db_url(config) -> str:
    return "sqlite:///" + hub_data_path(config, USAGE_DB_NAME)


class GPUSpawnerSettings(LoggingConfigurable):
    """Mixed into GPUDockerSpawner; traitlets reads these from the GPUDockerSpawner config
    section."""

    # ---- GPUs ------------------------------------------------------------------------------------
    gpu_inventory = CaselessStrEnum(
        INVENTORY_KINDS,
        default_value="auto",
        config=True,
        help="""Where the list of GPUs comes from.

        - auto: NVML when an NVIDIA driver answers, otherwise no GPUs (CPU-only servers only).
        - nvml: NVML; a missing driver is reported as an error.
        - simulated: the devices listed in `simulated_gpus` (demo mode; the spawn form says
          "simulated").
        - none: this host has no GPUs.
        - swarm: the GPUs each node of a Docker Swarm advertises as generic resources
          (GPUSwarmSpawner only, where it is the default).
        """,
    )
    simulated_gpus = Unicode(
        "",
        config=True,
        help="""YAML or JSON file of simulated GPUs, used when gpu_inventory = 'simulated'.

        A list of devices, each with uuid (GPU-…), name and memory_total (e.g. 80GiB), and
        optionally memory_used, utilization (percent), temperature and processes to mimic a busy
        GPU.
        """,
    )
    gpu_inventory_cache_seconds = Int(
        1, config=True, help="How long a GPU inventory snapshot is reused."
    )
    default_gpus = Int(
        0,
        config=True,
        help="GPUs a server gets when the request does not say (capped at the number of GPUs).",
    )
    gpu_policy = CaselessStrEnum(
        POLICIES,
        default_value="exclusive",
        config=True,
        help="exclusive: one server per GPU. shared: up to max_users_per_gpu servers on one GPU.",
    )
    max_users_per_gpu = Int(
        2, config=True, help="Servers that may share one GPU under the shared policy."
    )
    max_gpus_per_user = Int(
        None,
        allow_none=True,
        config=True,
        help="Most GPUs one user may hold across all their servers (None: no cap).",
    )
    busy_gpu_memory_threshold = ByteSpecification(
        "1G",
        config=True,
        help="""A GPU that no server of this hub holds, but whose used memory is at least this much
        (or that runs
        compute processes), is busy with work outside the hub and is not handed out.""",
    )

    spawn_from_link = Bool(
        False,
        config=True,
        help="""Start a server straight from a link carrying spawn options
        (``/hub/spawn?opt-course=dl&opt-gpus=2``), as stock JupyterHub does. Off by default: anyone
        can post such a link, and whoever opens it while logged in would start a GPU server that
        takes GPUs from the pool and spends their GPU hours, without seeing a form. Off, the link
        opens the spawn form with the link's course and GPUs preselected and a line saying to
        press Start. The REST API is not affected.""",
    )

    gpu_queue = Bool(
        True,
        config=True,
        help="""When every GPU is taken, a start waits in a first-come-first-served queue (the spawn
        page shows
        the student's place in line) instead of failing. Courses may override it (gpus: {queue:
        false}).""",
    )
    gpu_queue_timeout = Float(
        1800,
        config=True,
        help="""Seconds a start waits in the GPU queue before it gives up with a clear message,
        holding nothing
        (0: no queue, refuse at once). Courses may override it (gpus: {queue_timeout: 600}). The
        wait counts towards Spawner.start_timeout, whose default here leaves room for it; a smaller
        start_timeout set by the admin shortens the wait so that the hub never cuts a waiting
        student off with a generic timeout.""",
    )

    reconcile_interval = Float(
        30,
        config=True,
        help="""Seconds between checks of the GPU assignments against the running containers (0:
        only at hub start).

        A server that stops by itself is noticed by the hub's poll (Spawner.poll_interval) and gives
        its GPUs back then; this check also frees GPUs of containers that vanished (docker rm -f,
        dockerd restarted without --live-restore) before the hub notices, removes containers left
        behind by interrupted spawns, and logs running containers the hub did not know. One Docker
        API call per check.""",
    )

    # ---- idle GPUs -------------------------------------------------------------------------------
    gpu_idle_reclaim = CaselessStrEnum(
        RECLAIM_MODES,
        default_value="when_queued",
        config=True,
        help="""What happens to a server whose GPUs stayed idle for gpu_idle_minutes.

        - when_queued: it is stopped only while someone waits in the GPU queue for a GPU it would
          free (the longest-idle first, only as many as the queue needs).
        - always: it is stopped whether anyone waits or not.
        - never: idle GPUs stay with their server.

        The student is warned in JupyterLab gpu_idle_warn_minutes before; the home directory stays.
        Courses may override it (idle: {reclaim: always}).""",
    )
    gpu_idle_minutes = Float(
        60,
        config=True,
        help="""Minutes every GPU of a server must stay under gpu_idle_utilization before the server
        counts as
        GPU-idle (fractions allowed). Counted from the server's start or from the last sample that
        saw one of its GPUs busy. Courses may override it (idle: {minutes: 30}).""",
    )
    gpu_idle_warn_minutes = Float(
        10,
        config=True,
        help="""Minutes of warning in JupyterLab (status bar and panel) before an idle server is
        stopped. A server
        that is already idle when someone joins the queue still gets this much warning. Courses may
        override it (idle: {warn_minutes: 5}).""",
    )
    gpu_idle_utilization = Float(
        5,
        config=True,
        help="""A GPU under this utilisation (percent) is idle. A GPU whose utilisation cannot be
        read (MIG
        devices report none) always counts as busy: nothing is reclaimed on a guess.""",
    )
    gpu_idle_check_seconds = Float(
        10,
        config=True,
        help="""Seconds between samples of the held GPUs' utilisation in the hub (0: no sampling,
        nothing is ever
        reclaimed). Any busy sample resets a server's idle time.""",
    )
    runtime_dir = Unicode(
        config=True,
        help="""Directory the hub writes its runtime files to: per-server notices mounted read-only
        into each container (the reclaim warning JupyterLab shows), the GPU activity
        `jupyter-gpuspawn gpus` reports, and the containers whose removal is still pending
        (pending-removals-<spawner class>.json: a restarted hub removes them rather than adopting
        them). Keep it across hub restarts. Default: jupyter_gpuspawn/ next to the hub's sqlite
        database (the hub's working directory for other databases), as an absolute path. It must be
        a host path when the hub itself runs in a container.""",
    )

    # ---- usage records ---------------------------------------------------------------------------
    usage_db_url = Unicode(
        config=True,
        help="""SQLAlchemy URL of the GPU usage records (who held which GPU, when, why it ended;
        budgets and
        `jupyter-gpuspawn usage` read them). Default: an SQLite file jupyter_gpuspawn_usage.sqlite
        next to the hub's sqlite database (the hub's working directory for other databases), as an
        absolute path. Sites whose hub uses PostgreSQL or MySQL may point it there (e.g.
        postgresql://hub@db/jupyterhub); the tables are prefixed `gpuspawn_`. One hub per database:
        two hubs writing one close each other's open records. Back it up with the hub's
        database.""",
    )

    # ---- budgets ---------------------------------------------------------------------------------
    gpu_hours_per_week = Float(
        None,
        allow_none=True,
        config=True,
        help="""GPU-hours each student may use per week in each course (fractions allowed; None: no
        budget).
        A server with 2 GPUs uses 2 GPU-hours per hour; a seat on a GPU shared by n counts 1/n.
        Courses may set their own (gpus: {weekly_hours: 10}). A start whose budget is spent is
        refused (CPU-only servers still start); a running server that spends it is warned in
        JupyterLab gpu_idle_warn_minutes before, then stopped. Admins may add hours for a week:
        jupyter-gpuspawn grant USER HOURS.""",
    )
    gpu_budget_week_start = Unicode(
        "Monday 00:00",
        config=True,
        help="""When a budget week begins, in the hub's local time zone: a weekday and HH:MM, e.g.
        "Sunday 18:00".""",
    )
    gpu_budget_admins = Bool(
        False,
        config=True,
        help="Admins have GPU-hour budgets too (by default they are exempt).",
    )

    # ---- network ---------------------------------------------------------------------------------
    network_internal = Bool(
        False,
        config=True,
        help="""Create the user network as internal: containers get no route off this host (offline
        servers,
        exams). The hub still reaches them and they still reach the hub. Only applies when the
        spawner creates the network.""",
    )
    network_subnet = Unicode(
        "",
        config=True,
        help="""Subnet for the user network when the spawner creates it, e.g. 10.213.0.0/24 (empty:
        Docker picks
        one). Set it when other config names the network's gateway address, so a re-created network
        keeps it.""",
    )
    require_isolated_network = Bool(
        True,
        config=True,
        help="""Refuse to start servers on a named network where containers can reach each other (a
        network made
        by hand without com.docker.network.bridge.enable_icc=false). Students could otherwise
        connect to each other's servers and services. network_name "host" (everything on the host's
        loopback) is an explicit opt-in for trusted single-user hosts only and is not checked.""",
    )

    # ---- courses and the spawn form --------------------------------------------------------------
    courses_dir = Unicode(
        "",
        config=True,
        help="""Directory of course files (one YAML file per course; see config/courses/). Reloaded
        on change, no
        hub restart needed. When set, courses define what users can start and allowed_images is not
        used.""",
    )
    course_data_roots = List(
        Unicode(),
        [],
        config=True,
        help=(
            "Host directories under which course mounts may point (e.g. /srv/datasets). Others "
            "are refused."
        ),
    )
    instructor_limits = Dict(
        {},
        config=True,
        help="""Caps on what instructors may set from their course pages (the gpu-admin service's
        "My courses";
        admins are not capped). Keys, each optional (left out: no cap): max_gpus (GPUs per student,
        gpus.max), max_mem_limit ("32G"), max_cpu_limit (8), max_shm_size ("8G"), max_weekly_hours
        (gpus.weekly_hours), images (the image references instructors may use; default: the images
        this hub already offers: image, allowed_images and those in the course files), data_roots
        (host directories course mounts may come from; default: course_data_roots), mount_targets
        (container directories course mounts go under: ["/data"]), allow_read_write_mounts (False),
        max_idle_minutes (idle.minutes), allow_reclaim_never (False: instructors cannot exempt a
        course from idle reclaim), group_prefix (the hub group of a new course: "course-<id>"),
        max_courses (20 per instructor). An edit past a cap is refused with the cap in the message;
        a wrong key stops the service with a message naming it.""",
    )
    course_creator_groups = List(
        Unicode(),
        [],
        config=True,
        help="""JupyterHub groups whose members may create courses on the "My courses" page (they
        become the new
        course's instructors). Instructors of an existing course may create courses too; admins
        always may.""",
    )
    form_template_paths = List(
        Unicode(),
        [],
        config=True,
        help=(
            "Directories searched first for gpuspawn_form.html, so a site can override the spawn "
            "form."
        ),
    )

    # ---- users and homes -------------------------------------------------------------------------
    home_template = Unicode(
        "/home/{username}",
        config=True,
        help="""Host path of a user's home, bind-mounted into their container. {username} is the hub
        user name;
        it must be a plain name (ASCII letters, digits, . _ @ + -) and the path must stay inside the
        template's directory. No symlink below the template's fixed directory is followed, and an
        existing home owned by another uid than the user's is refused, never mounted.

        The default suits host accounts (PAM). For users with uids from uid_range (OAuth,
        shared-password and demo logins) use a dedicated directory such as
        /srv/jupyter-gpuspawn/homes/{username}, so hub users never meet the homes of host
        accounts.""",
    )
    container_home_template = Unicode(
        "/home/{username}",
        config=True,
        help="Where the home is mounted inside the container; also HOME and the cwd.",
    )
    create_home = Bool(
        True,
        config=True,
        help="Create a missing host home, owned by the user's uid:gid, mode 0700.",
    )
    user_id_source = CaselessStrEnum(
        ["auto", "host", "range"],
        default_value="auto",
        config=True,
        help="""Which uid:gid a container runs as.

        - host: the user's host account (PAM/LDAP through NSS); spawning fails for users without
          one. Set it explicitly when the authenticator checks host accounts but is not a
          LocalAuthenticator (LDAP).
        - range: a stable uid from uid_range for every user, recorded in uid_map_file (OAuth, demo
          logins).
        - auto: with a LocalAuthenticator (PAM), the host account when there is one (uid >=
          min_uid); with any other authenticator (dummy, shared password, OAuth) always the range: a
          login name alone is no proof of the host account that carries it.

        A uid_gid_hook, when set, overrides all of these.
        """,
    )
    uid_range = Tuple(
        Int(),
        Int(),
        default_value=(200000, 299999),
        config=True,
        help="First and last uid handed to users without a host account.",
    )
    uid_map_file = Unicode(
        config=True,
        help="""JSON file recording the uid given to each user without a host account (never reused
        for another).
        Default: jupyter_gpuspawn_uids.json next to the hub's sqlite database (the hub's working
        directory for other databases), as an absolute path. Back it up with the database.""",
    )
    min_uid = Int(
        1000, config=True, help="Host accounts below this uid (root, system users) are never used."
    )
    uid_gid_hook = Callable(
        None,
        allow_none=True,
        config=True,
        help=(
            "Optional callable(spawner) -> (uid, gid), may be async: for sites that look up ids "
            "elsewhere."
        ),
    )

    # ---- container defaults ----------------------------------------------------------------------
    shm_size = ByteSpecification(
        "1G",
        config=True,
        help="/dev/shm size. PyTorch DataLoader workers need far more than Docker's 64 MB.",
    )
    pids_limit = Int(
        4096, config=True, help="Most processes and threads in one container (0: no limit)."
    )
    ulimits = Dict(
        {},
        config=True,
        help="""Container ulimits (name -> limit, -1 unlimited). NVIDIA advises {"memlock": -1,
        "stack": 67108864}
        for NGC images; that needs a Docker daemon whose own limits allow it, so it is not the
        default.""",
    )
    cap_add = List(
        Unicode(),
        [],
        config=True,
        help=(
            "Capabilities given back after dropping all of them. Add only what the image truly "
            "needs."
        ),
    )
    no_new_privileges = Bool(
        True, config=True, help="Run containers with no-new-privileges (setuid has no effect)."
    )
    docker_threads = Int(
        8,
        config=True,
        help=(
            "Threads for Docker API calls. DockerSpawner uses one, which serialises every spawn "
            "of a burst."
        ),
    )

    ready_poll_interval = Float(
        0.1,
        config=True,
        help="""Seconds between the spawner's own checks that a new server answers (0: leave it to
        the hub).

        JupyterHub's own check backs off to 5 s between tries, so in a burst it notices ready
        servers late; the spawner also notices a container that exited and says so at once.""",
    )

    @default("uid_map_file")
    def _default_uid_map_file(self):
        return default_uid_map_file(self.config)

    @default("usage_db_url")
    def _default_usage_db_url(self):
        return default_usage_db_url(self.config)

    @default("runtime_dir")
    def _default_runtime_dir(self):
        return hub_data_path(self.config, RUNTIME_DIR_NAME)

    @validate("uid_range")
    def _validate_uid_range(self, proposal):
        first, last = proposal["value"]
        if not 0 < first <= last:
            raise ValueError(
                f"uid_range must be (first, last) with 0 < first <= last, got {proposal['value']}"
            )
        return proposal["value"]

    @validate("gpu_idle_minutes")
    def _validate_idle_minutes(self, proposal):
        # 0 or less would stop every GPU server at the first check, without a warning
        if not proposal["value"] > 0:
            raise ValueError(f"gpu_idle_minutes must be more than 0, got {proposal['value']}")
        return proposal["value"]

    @validate("gpu_idle_warn_minutes")
    def _validate_idle_warn_minutes(self, proposal):
        if not proposal["value"] >= 0:
            raise ValueError(f"gpu_idle_warn_minutes must be 0 or more, got {proposal['value']}")
        return proposal["value"]

    @validate("gpu_idle_utilization")
    def _validate_idle_utilization(self, proposal):
        # above 100 a training run at full speed would count as idle
        if not 0 < proposal["value"] <= 100:
            raise ValueError(
                f"gpu_idle_utilization must be a percentage above 0 and at most 100, got "
                f"{proposal['value']}"
            )
        return proposal["value"]

    @validate("gpu_budget_week_start")
    def _validate_week_start(self, proposal):
        try:
            parse_week_start(proposal["value"])
        except WeekStartError as e:
            raise ValueError(f"gpu_budget_week_start: {e}") from None
        return proposal["value"]

    @validate("gpu_hours_per_week")
    def _validate_hours_per_week(self, proposal):
        if proposal["value"] is not None and not proposal["value"] >= 0:
            raise ValueError(
                f"gpu_hours_per_week must be 0 or more (or None: no budget), got "
                f"{proposal['value']}"
            )
        return proposal["value"]
