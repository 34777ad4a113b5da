"""Packaging facts a release relies on: one version for the Python package and the labextension."""

from __future__ import annotations

import json
import os

from jupyter_gpuspawn import __version__

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_labextension_carries_the_python_packages_version():
    with open(os.path.join(ROOT, "labextension", "package.json")) as f:
        assert json.load(f)["version"] == __version__


def test_both_spawners_are_entry_points():
    from importlib.metadata import entry_points

    found = {e.name: e.value for e in entry_points(group="jupyterhub.spawners")}
    assert found["gpudocker"] == "jupyter_gpuspawn.spawner:GPUDockerSpawner"
    assert found["gpuswarm"] == "jupyter_gpuspawn.swarmspawner:GPUSwarmSpawner"
    # the names the README gives: jupyter_gpuspawn.GPUDockerSpawner / .GPUSwarmSpawner
    import jupyter_gpuspawn

    assert jupyter_gpuspawn.GPUSwarmSpawner.__name__ == "GPUSwarmSpawner"
    assert jupyter_gpuspawn.GPUDockerSpawner.__name__ == "GPUDockerSpawner"
