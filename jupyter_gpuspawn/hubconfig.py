"""The hub's settings as other processes see them (the CLI, the admin service): read from
jupyterhub_config.py."""

from __future__ import annotations

import os

from .settings import RUNTIME_DIR_NAME, default_usage_db_url, hub_data_path


def load_config(path):
    """The traitlets Config of a jupyterhub_config.py (empty without a path)."""
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    if not path:
        return Config()
    loader = PyFileConfigLoader(os.path.basename(path), path=os.path.dirname(os.path.abspath(path)))
    return loader.load_config()


def spawner_settings(path) -> dict:
    """Spawner settings from a jupyterhub_config.py (DockerSpawner's, overridden by
    GPUDockerSpawner's), so other processes see what the hub sees."""
    if not path:
        return {}
    config = load_config(path)
    settings = {}
    sections = ("Spawner", "DockerSpawner", "GPUDockerSpawner")
    if uses_swarm(config):
        sections = (
            "Spawner",
            "DockerSpawner",
            "SwarmSpawner",
            "GPUDockerSpawner",
            "GPUSwarmSpawner",
        )
        settings["gpu_inventory"] = "swarm"
    for section in sections:
        if section in config:
            settings.update(dict(config[section]))
    return settings


def uses_swarm(config) -> bool:
    """Whether the hub spawns with GPUSwarmSpawner (by entry point name, import path or class)."""
    spawner = config.JupyterHub.get("spawner_class", "") if "JupyterHub" in config else ""
    name = spawner if isinstance(spawner, str) else getattr(spawner, "__name__", "")
    return name == "gpuswarm" or name.endswith("GPUSwarmSpawner")


def runtime_dir(path) -> str:
    return spawner_settings(path).get("runtime_dir") or hub_data_path(
        load_config(path), RUNTIME_DIR_NAME
    )


def usage_db_url(path) -> str:
    return spawner_settings(path).get("usage_db_url") or default_usage_db_url(load_config(path))


def week_start_spec(path) -> str:
    return spawner_settings(path).get("gpu_budget_week_start") or "Monday 00:00"
