"""Container spec pieces that enforce GPU isolation: labels, protected env, host-config merge. Pure
functions."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

LABEL_PREFIX = "org.jupyter.gpuspawn."
LABEL_USER = LABEL_PREFIX + "user"
LABEL_SERVER = LABEL_PREFIX + "server"
LABEL_COURSE = LABEL_PREFIX + "course"
LABEL_IMAGE_KEY = LABEL_PREFIX + "image-key"
LABEL_GPUS = LABEL_PREFIX + "gpus"
LABEL_POLICY = LABEL_PREFIX + "gpu-policy"
LABEL_MAX_USERS = LABEL_PREFIX + "max-users-per-gpu"
LABEL_NODE = LABEL_PREFIX + "node"  # Swarm only: the node (hostname) whose GPUs the server holds

# Environment variables a course file may not set (a user cannot set env at all). This is the one
# list: courses.parse_course refuses them, and the spawner's get_env drops them from a course's env
# and drops the spawner's own (is_spawner_env) from the admin's `environment` before it sets them.
# Why each:
PROTECTED_ENV = (
    "CUDA_VISIBLE_DEVICES",  # would renumber or hide the GPUs assigned by UUID
    "MEM_LIMIT",
    "CPU_LIMIT",  # the spawner's limits, shown by the status extension
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONHOME",  # change which code the single-user server runs
    # where Jupyter loads config and extensions from
    "JUPYTER_CONFIG_DIR",
    "JUPYTER_CONFIG_PATH",
    "JUPYTER_PATH",
    # DockerSpawner's record of the image, read by the status extension
    "JUPYTER_IMAGE",
    "JUPYTER_IMAGE_SPEC",
    # the user's identity and home (set by the spawner and the entrypoint)
    "HOME",
    "USER",
    "PATH",
    "SHELL",
)
PROTECTED_ENV_PREFIXES = (
    # the dynamic loader: LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, ... load code into every process
    "LD_",
    # read by the NVIDIA container runtime on the host: NVIDIA_VISIBLE_DEVICES picks the GPUs
    "NVIDIA_",
    "JUPYTERHUB_",
    "JPY_",  # the hub's API token, URLs and OAuth settings, which the server trusts
    "JUPYTER_GPUSPAWN_",  # the spawner's record of GPUs, course and image
    # Swarm's generic resources: the NVIDIA runtime may read GPUs from them (swarm-resource)
    "DOCKER_RESOURCE_",
)


def oauth_client_id(user: str, server: str) -> str:
    """A server's OAuth client id that no other (user, server) pair can share.

    JupyterHub 6 names a named server's client ``jupyterhub-user-{quote(user)}-{quote(server)}``, so
    user "a-b" and user "a"'s server "b" collide (the GHSA-v7m9-9497-p9gr class); the second spawn
    then fails. quote() never produces a bare "%" without two hex digits, so "%-" separates
    unambiguously (and is legal in a cookie name, which the client id becomes). Default servers keep
    the hub's own id.
    """
    base = f"jupyterhub-user-{quote(user, safe='')}"
    return f"{base}%-{quote(server, safe='')}" if server else base


def is_spawner_env(name: str) -> bool:
    """Whether ``name`` is set by the spawner alone, so not even the admin's ``environment`` may
    override it: the GPU assignment (NVIDIA_*, CUDA_VISIBLE_DEVICES, JUPYTER_GPUSPAWN_*), the limits
    the status extension shows, and the loader (LD_*). The admin keeps the rest of the protected
    list (PATH, JUPYTERHUB_SINGLEUSER_APP, ...)."""
    name = name.split("=", 1)[0]
    return name in ("CUDA_VISIBLE_DEVICES", "MEM_LIMIT", "CPU_LIMIT") or name.startswith(
        ("LD_", "NVIDIA_", "JUPYTER_GPUSPAWN_", "DOCKER_RESOURCE_")
    )


def is_protected_env(name: str) -> bool:
    """Whether ``name`` is in PROTECTED_ENV or starts with one of PROTECTED_ENV_PREFIXES
    (case-sensitive, as the kernel and the loader read names). Only the part before a "=" counts:
    Docker gets env as "KEY=VALUE" strings, so a key "LD_PRELOAD=/x.so" would set LD_PRELOAD."""
    name = name.split("=", 1)[0]
    return name in PROTECTED_ENV or name.startswith(PROTECTED_ENV_PREFIXES)


@dataclass(frozen=True)
class GPUAssignment:
    """What a container holds, as written to (and read back from) its labels."""

    user: str
    server: str
    gpus: tuple[str, ...]
    policy: str = "exclusive"
    max_users_per_gpu: int = 1
    course: str = ""
    image_key: str = ""
    node: str = ""  # Swarm: the node of the GPUs (and of the service's task); "" on one host

    @property
    def share(self) -> float:
        """The part of each GPU this server is charged for: 1, or 1/n of a GPU shared by up to n."""
        return 1 / self.max_users_per_gpu if self.policy == "shared" else 1.0

    def labels(self) -> dict:
        labels = {
            LABEL_USER: self.user,
            LABEL_SERVER: self.server,
            LABEL_COURSE: self.course,
            LABEL_IMAGE_KEY: self.image_key,
            LABEL_GPUS: ",".join(self.gpus),
            LABEL_POLICY: self.policy,
            LABEL_MAX_USERS: str(self.max_users_per_gpu),
        }
        if self.node:
            labels[LABEL_NODE] = self.node
        return labels

    def to_state(self) -> dict:
        """What the hub's database keeps of the assignment (beside the labels Docker keeps)."""
        return {
            "gpus": list(self.gpus),
            "policy": self.policy,
            "max_users_per_gpu": self.max_users_per_gpu,
            "course": self.course,
            "image_key": self.image_key,
            "node": self.node,
        }

    @classmethod
    def from_state(cls, user: str, server: str, state: Mapping) -> GPUAssignment:
        return cls(
            user=user,
            server=server,
            gpus=tuple(state.get("gpus") or ()),
            policy=state.get("policy", "exclusive"),
            max_users_per_gpu=int(state.get("max_users_per_gpu") or 1),
            course=state.get("course", ""),
            image_key=state.get("image_key", ""),
            node=state.get("node") or "",
        )

    @classmethod
    def from_labels(cls, labels: Mapping) -> GPUAssignment | None:
        if not labels or LABEL_USER not in labels:
            return None
        try:
            max_users = max(1, int(labels.get(LABEL_MAX_USERS) or 1))
        except ValueError:
            max_users = 1
        return cls(
            user=labels[LABEL_USER],
            server=labels.get(LABEL_SERVER, ""),
            gpus=tuple(u for u in (labels.get(LABEL_GPUS) or "").split(",") if u),
            policy=labels.get(LABEL_POLICY) or "exclusive",
            max_users_per_gpu=max_users,
            course=labels.get(LABEL_COURSE, ""),
            image_key=labels.get(LABEL_IMAGE_KEY, ""),
            node=labels.get(LABEL_NODE, ""),
        )


def gpu_env(gpus: Sequence[str], course: str, image: str) -> dict:
    """Env that tells the NVIDIA runtime and our status extension which GPUs this container has."""
    return {
        # "void": CUDA images bake in NVIDIA_VISIBLE_DEVICES=all, which on hosts with nvidia as the
        # default runtime would hand a CPU-only server every GPU.
        "NVIDIA_VISIBLE_DEVICES": ",".join(gpus) if gpus else "void",
        "JUPYTER_GPUSPAWN_GPUS": ",".join(gpus),
        "JUPYTER_GPUSPAWN_COURSE": course,
        "JUPYTER_GPUSPAWN_IMAGE": image,
    }


def device_requests(gpus: Sequence[str]) -> list:
    """Docker device requests naming GPUs by UUID. Never a count: a count always means GPUs
    0..n-1."""
    if not gpus:
        return []
    return [{"driver": "nvidia", "device_ids": list(gpus), "capabilities": [["gpu"]]}]


def _is_nvidia_request(request) -> bool:
    # docker-py takes DeviceRequest objects (dicts with Driver/Capabilities) or dicts of its kwargs.
    get = request.get if isinstance(request, Mapping) else (lambda k: getattr(request, k, None))
    driver = (get("Driver") or get("driver") or "").lower()
    capabilities = get("Capabilities") or get("capabilities") or []
    return driver in ("", "nvidia") and any("gpu" in caps for caps in capabilities)


def merge_host_config(admin: Mapping | None, ours: Mapping, defaults: Mapping) -> tuple[dict, list]:
    """Combine the admin's ``extra_host_config`` with the spawner's.

    - ``ours`` (isolation and hardening) always applies: GPU device requests replace any GPU
      requests of the admin's, list settings such as ``cap_drop`` and ``security_opt`` are unions.
    - ``defaults`` (shm size, pids limit, ulimits) apply unless the admin set that key.
    Returns the merged dict and a list of warnings for the log.
    """
    merged = copy.deepcopy(dict(admin or {}))
    warnings = []
    for key, value in defaults.items():
        merged.setdefault(key, copy.deepcopy(value))
    for key, value in ours.items():
        if key == "device_requests":
            kept = [r for r in merged.get(key) or [] if not _is_nvidia_request(r)]
            if len(kept) != len(merged.get(key) or []):
                warnings.append(
                    "ignoring GPU device_requests in extra_host_config: GPUs are assigned by UUID"
                )
            merged[key] = kept + list(value)
        elif isinstance(value, list):
            existing = list(merged.get(key) or [])
            merged[key] = existing + [v for v in value if v not in existing]
        else:
            merged[key] = copy.deepcopy(value)
    return merged, warnings
