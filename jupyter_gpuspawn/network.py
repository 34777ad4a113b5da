"""The user network: a Docker bridge on which students' containers cannot reach each other.

With host networking every student shares the host's loopback: one student's TensorBoard, Dask
scheduler or
``http.server`` on 127.0.0.1 is open to all the others, and so is everything else listening on the
host's loopback. On a bridge with inter-container communication disabled (``enable_icc=false``) each
container has its own loopback, Docker drops container-to-container traffic on the bridge, and the
hub reaches each server on its container address. Containers reach the host only on the bridge's
gateway address, where the hub's API listens.

Blocking docker-py calls (``docker.APIClient``): run them in an executor.
"""

from __future__ import annotations

import ipaddress
import sys
import time
from dataclasses import dataclass

NETWORK_LABEL = "org.jupyter.gpuspawn.network"
ICC_OPTION = "com.docker.network.bridge.enable_icc"
DEFAULT_NETWORK = "jupyter-gpuspawn"
# Docker's own modes: nothing to create, nothing to isolate.
BUILTIN_NETWORKS = ("host", "bridge", "none", "default")


class NetworkError(RuntimeError):
    """The user network is missing, cannot be created, or does not isolate students; the text is for
    the admin."""


@dataclass(frozen=True)
class UserNetwork:
    name: str
    gateway: str  # the host's address on the network: where containers reach the hub
    subnet: str
    isolated: bool  # inter-container communication is off
    internal: bool  # no route off the host


def _describe(data: dict) -> UserNetwork:
    configs = (data.get("IPAM") or {}).get("Config") or [{}]
    options = data.get("Options") or {}
    return UserNetwork(
        name=data["Name"],
        gateway=configs[0].get("Gateway", ""),
        subnet=configs[0].get("Subnet", ""),
        isolated=str(options.get(ICC_OPTION, "true")).lower() == "false",
        internal=bool(data.get("Internal")),
    )


def find_network(client, name: str) -> UserNetwork | None:
    import docker.errors

    try:
        return _describe(client.inspect_network(name))
    except docker.errors.NotFound:
        return None


def ensure_network(
    client,
    name: str = DEFAULT_NETWORK,
    *,
    internal: bool = False,
    subnet: str = "",
    require_isolated: bool = True,
) -> UserNetwork:
    """The network ``name``, created as an isolated bridge if it does not exist.

    An existing network is used as it is, but one that lets containers reach each other, or whose
    ``internal`` flag differs from ``internal``, is refused: a network of that name made by hand (or
    by an older setup) must not silently undo the isolation.
    """
    import docker.errors

    found = find_network(client, name)
    if found is None and name in BUILTIN_NETWORKS:
        raise NetworkError(f"Docker has no network {name!r}")
    if found is None:
        ipam = None
        if subnet:
            from docker.types import IPAMConfig, IPAMPool

            # the gateway named too: with a subnet alone, Docker leaves it out of the network's
            # description
            gateway = str(next(ipaddress.ip_network(subnet, strict=False).hosts()))
            ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=subnet, gateway=gateway)])
        try:
            client.create_network(
                name,
                driver="bridge",
                internal=internal,
                ipam=ipam,
                check_duplicate=True,
                options={ICC_OPTION: "false"},
                labels={NETWORK_LABEL: "user-network"},
            )
        except docker.errors.APIError as e:
            if e.status_code != 409:  # 409: another hub process created it a moment ago
                raise NetworkError(
                    f"Cannot create the Docker network {name!r}: {e.explanation or e}"
                ) from None
        found = find_network(client, name)
        if found is None:
            raise NetworkError(f"The Docker network {name!r} vanished right after it was created")
    if subnet and found.subnet != subnet:
        raise NetworkError(
            f"The Docker network {name!r} exists with subnet {found.subnet or 'none'}, not the "
            f"configured {subnet}. "
            "Remove it (docker network rm, once no server uses it) or change network_subnet."
        )
    if found.internal != internal and name not in BUILTIN_NETWORKS:
        # e.g. hub_address() made it at config load without internal=True: an exam network that
        # silently routes off the host must not pass
        have = "internal (no route off this host)" if found.internal else "routed off this host"
        raise NetworkError(
            f"The Docker network {name!r} exists {have}, but network_internal is {internal}. "
            "Remove it (docker network rm, once no server uses it) and the spawner recreates it; "
            "hub_address() in jupyterhub_config.py must be given the same internal= setting."
        )
    if require_isolated and not found.isolated:
        fix = (
            "set GPUDockerSpawner.network_name to a network of the spawner's own (the default "
            "creates one)"
            if name in BUILTIN_NETWORKS
            else "remove it (docker network rm) and the spawner recreates it isolated, "
            "or choose another network"
        )
        raise NetworkError(
            f"The Docker network {name!r} lets containers reach each other (enable_icc is not "
            f"false), so students "
            f"could connect to each other's servers: {fix}. Only on a trusted single-user host, "
            f"set "
            "GPUDockerSpawner.require_isolated_network = False."
        )
    if not found.gateway:
        raise NetworkError(
            f"The Docker network {name!r} has no gateway address; the hub cannot be reached on it"
        )
    return found


def hub_address(
    name: str = DEFAULT_NETWORK,
    *,
    internal: bool = False,
    subnet: str = "",
    wait_for_docker: float = 300,
) -> str:
    """For jupyterhub_config.py: make sure the user network exists and return the host's address on
    it.

    Bind the hub's API there so containers reach it and nothing outside does::

        from jupyter_gpuspawn.network import hub_address
        c.JupyterHub.hub_bind_url = f"http://{hub_address()}:8081"

    Pass the same ``name``, ``internal`` and ``subnet`` as the spawner's ``network_name``,
    ``network_internal`` and ``network_subnet``. While Docker does not answer (the hub started at
    boot or after an upgrade before dockerd is back) it waits up to ``wait_for_docker`` seconds,
    saying so on stderr: a hub that exits at once instead is restarted by systemd, which gives up
    on a unit that fails five times in ten seconds, leaving no hub at all.
    """
    import docker

    deadline = time.monotonic() + wait_for_docker
    said = False
    while True:
        try:
            client = docker.APIClient(version="auto")
            break
        except docker.errors.DockerException as e:
            if time.monotonic() >= deadline:
                raise
            if not said:
                print(
                    f"jupyter-gpuspawn: Docker does not answer ({e}); waiting up to "
                    f"{wait_for_docker:.0f} s for it before the hub starts",
                    file=sys.stderr,
                    flush=True,
                )
                said = True
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    try:
        return ensure_network(client, name, internal=internal, subnet=subnet).gateway
    finally:
        client.close()
