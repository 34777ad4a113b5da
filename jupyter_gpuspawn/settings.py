"""GPUDockerSpawner's own settings (``c.GPUDockerSpawner.…``), kept apart from the spawner's logic."""
from __future__ import annotations

from jupyterhub.traitlets import ByteSpecification, Callable
from traitlets import Bool, CaselessStrEnum, Dict, Float, Int, List, Tuple, Unicode, validate
from traitlets.config import LoggingConfigurable

from .allocation import POLICIES
from .gpus import INVENTORY_KINDS


class GPUSpawnerSettings(LoggingConfigurable):
    """Mixed into GPUDockerSpawner; traitlets reads these from the GPUDockerSpawner config section."""

    # ---- GPUs --------------------------------------------------------------------------------------------------
    gpu_inventory = CaselessStrEnum(
        INVENTORY_KINDS,
        default_value="auto",
        config=True,
        help="""Where the list of GPUs comes from.

        - auto: NVML when an NVIDIA driver answers, otherwise no GPUs (CPU-only servers only).
        - nvml: NVML; a missing driver is reported as an error.
        - simulated: the devices listed in `simulated_gpus` (demo mode; the spawn form says "simulated").
        - none: this host has no GPUs.
        """,
    )
    simulated_gpus = Unicode(
        "",
        config=True,
        help="""YAML or JSON file of simulated GPUs, used when gpu_inventory = 'simulated'.

        A list of devices, each with uuid (GPU-…), name and memory_total (e.g. 80GiB), and optionally
        memory_used, utilization (percent), temperature and processes to mimic a busy GPU.
        """,
    )
    gpu_inventory_cache_seconds = Int(1, config=True, help="How long a GPU inventory snapshot is reused.")
    default_gpus = Int(
        0, config=True, help="GPUs a server gets when the request does not say (capped at the number of GPUs)."
    )
    gpu_policy = CaselessStrEnum(
        POLICIES,
        default_value="exclusive",
        config=True,
        help="exclusive: one server per GPU. shared: up to max_users_per_gpu servers on one GPU.",
    )
    max_users_per_gpu = Int(2, config=True, help="Servers that may share one GPU under the shared policy.")
    max_gpus_per_user = Int(
        None, allow_none=True, config=True, help="Most GPUs one user may hold across all their servers (None: no cap)."
    )
    busy_gpu_memory_threshold = ByteSpecification(
        "1G",
        config=True,
        help="""A GPU that no server of this hub holds, but whose used memory is at least this much (or that runs
        compute processes), is busy with work outside the hub and is not handed out.""",
    )

    # ---- courses and the spawn form ---------------------------------------------------------------------------------
    courses_dir = Unicode(
        "",
        config=True,
        help="""Directory of course files (one YAML file per course; see config/courses/). Reloaded on change, no
        hub restart needed. When set, courses define what users can start and allowed_images is not used.""",
    )
    course_data_roots = List(
        Unicode(),
        [],
        config=True,
        help="Host directories under which course mounts may point (e.g. /srv/datasets). Others are refused.",
    )
    form_template_paths = List(
        Unicode(),
        [],
        config=True,
        help="Directories searched first for gpuspawn_form.html, so a site can override the spawn form.",
    )

    # ---- users and homes ------------------------------------------------------------------------------------------
    home_template = Unicode(
        "/home/{username}",
        config=True,
        help="""Host path of a user's home, bind-mounted into their container. {username} is the hub user name;
        it must be a plain name (ASCII letters, digits, . _ @ + -) and the path must stay inside the template's
        directory.""",
    )
    container_home_template = Unicode(
        "/home/{username}", config=True, help="Where the home is mounted inside the container; also HOME and the cwd."
    )
    create_home = Bool(
        True, config=True, help="Create a missing host home, owned by the user's uid:gid, mode 0700."
    )
    user_id_source = CaselessStrEnum(
        ["auto", "host", "range"],
        default_value="auto",
        config=True,
        help="""Which uid:gid a container runs as.

        - host: the user's host account (PAM/LDAP through NSS); spawning fails for users without one.
        - range: a stable uid from uid_range for every user, recorded in uid_map_file (OAuth, demo logins).
        - auto: the host account when there is one (uid >= min_uid), otherwise a uid from the range.
        A uid_gid_hook, when set, overrides all of these.
        """,
    )
    uid_range = Tuple(
        Int(), Int(), default_value=(200000, 299999), config=True,
        help="First and last uid handed to users without a host account.",
    )
    uid_map_file = Unicode(
        "jupyter_gpuspawn_uids.json",
        config=True,
        help="JSON file recording the uid given to each user without a host account (never reused for another).",
    )
    min_uid = Int(1000, config=True, help="Host accounts below this uid (root, system users) are never used.")
    uid_gid_hook = Callable(
        None,
        allow_none=True,
        config=True,
        help="Optional callable(spawner) -> (uid, gid), may be async: for sites that look up ids elsewhere.",
    )

    # ---- container defaults ---------------------------------------------------------------------------------------
    shm_size = ByteSpecification(
        "1G", config=True, help="/dev/shm size. PyTorch DataLoader workers need far more than Docker's 64 MB."
    )
    pids_limit = Int(4096, config=True, help="Most processes and threads in one container (0: no limit).")
    ulimits = Dict(
        {},
        config=True,
        help="""Container ulimits (name -> limit, -1 unlimited). NVIDIA advises {"memlock": -1, "stack": 67108864}
        for NGC images; that needs a Docker daemon whose own limits allow it, so it is not the default.""",
    )
    cap_add = List(
        Unicode(), [], config=True,
        help="Capabilities given back after dropping all of them. Add only what the image truly needs.",
    )
    no_new_privileges = Bool(True, config=True, help="Run containers with no-new-privileges (setuid has no effect).")
    docker_threads = Int(
        8,
        config=True,
        help="Threads for Docker API calls. DockerSpawner uses one, which serialises every spawn of a burst.",
    )

    ready_poll_interval = Float(
        0.1,
        config=True,
        help="""Seconds between the spawner's own checks that a new server answers (0: leave it to the hub).

        JupyterHub's own check backs off to 5 s between tries, so in a burst it notices ready servers late; the
        spawner also notices a container that exited and says so at once.""",
    )

    @validate("uid_range")
    def _validate_uid_range(self, proposal):
        first, last = proposal["value"]
        if not 0 < first <= last:
            raise ValueError(f"uid_range must be (first, last) with 0 < first <= last, got {proposal['value']}")
        return proposal["value"]
