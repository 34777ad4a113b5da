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
    # the names the docs give: jupyter_gpuspawn.GPUDockerSpawner / .GPUSwarmSpawner
    import jupyter_gpuspawn

    assert jupyter_gpuspawn.GPUSwarmSpawner.__name__ == "GPUSwarmSpawner"
    assert jupyter_gpuspawn.GPUDockerSpawner.__name__ == "GPUDockerSpawner"


# Packages only the hub needs (the `hub` extra; jinja2 and jsonschema come with jupyter_server too):
# a user image must run the server extension without any of them, since build-image installs the
# base requirements only.
HUB_ONLY = ("jupyterhub", "dockerspawner", "docker", "ruamel")


def base_and_extra_requirements():
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    base, extras = set(), {}
    for line in requires("jupyter-gpuspawn") or []:
        req = Requirement(line)
        marker = str(req.marker or "")
        if "extra ==" in marker:
            extra = marker.split("extra ==", 1)[1].strip().strip("\"'")
            extras.setdefault(extra, set()).add(req.name.lower().replace("_", "-"))
        else:
            base.add(req.name.lower().replace("_", "-"))
    return base, extras


def test_the_base_install_is_the_user_server_side_and_the_hub_extra_adds_the_hub():
    base, extras = base_and_extra_requirements()
    assert base == {"jupyter-server", "traitlets", "nvidia-ml-py", "pyyaml"}
    assert {"jupyterhub", "dockerspawner", "jinja2", "jsonschema", "ruamel-yaml"} <= extras["hub"]
    assert extras["hub"] <= extras["test"]  # the tests run the hub (hatchling inlines [hub])


def test_the_server_extension_loads_without_any_hub_package(tmp_path):
    """What runs inside a user image (the status extension, its collector, its handler) imports
    nothing from the hub extra: an import of any of those fails here, as it would in the image."""
    script = f"""
import importlib.abc, sys
class NoHubPackages(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HUB_ONLY!r}:
            raise ImportError(f"{{name}} is a hub package (the hub extra)")
sys.meta_path.insert(0, NoHubPackages())
import jupyter_gpuspawn, jupyter_gpuspawn.status
from jupyter_gpuspawn.status import activity, collector, container, handlers, notice
assert jupyter_gpuspawn._jupyter_server_extension_points()
print("ok")
"""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_a_wheel_built_from_the_sdist_needs_no_node(tmp_path):
    """The sdist carries the built labextension; building the wheel from it runs no npm (a host
    with no Node.js can install the sdist), and the wheel holds the extension and install.json."""
    import subprocess
    import sys
    import tarfile
    import zipfile

    if not os.path.exists(os.path.join(ROOT, "jupyter_gpuspawn/labextension/package.json")):
        raise AssertionError("build the labextension first (scripts/setup does)")
    build = [sys.executable, "-m", "build", "--no-isolation"]
    r = subprocess.run(
        [*build, "--sdist", "-o", str(tmp_path / "dist"), ROOT],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (sdist,) = (tmp_path / "dist").glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        # sources only: no build output, no local environments, no downloaded wheels
        stray = [
            n
            for n in tar.getnames()
            if any(part in n.split("/") for part in ("node_modules", "test-artifacts", "_build"))
            or n.endswith((".whl", ".sqlite"))
            or "/.venv" in n
        ]
        assert not stray, stray[:10]
        tar.extractall(tmp_path / "src", filter="data")
    (source,) = (tmp_path / "src").iterdir()
    # sources newer than the built extension (an sdist made after an edit, or unpacked by a tool
    # that drops mtimes): only skip-if-exists keeps the build hook from running npm then
    later = os.path.getmtime(source / "jupyter_gpuspawn/labextension/package.json") + 60
    for path in (source / "labextension").rglob("*"):
        os.utime(path, (later, later))
    # a PATH with Python but no npm/node/jlpm: the build hook fails if it tries to run them
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("npm", "node", "jlpm", "yarn"):
        fake = bin_dir / tool
        fake.write_text(f"#!/bin/sh\necho '{tool} must not run' >&2\nexit 97\n")
        fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.path.dirname(sys.executable)}:/usr/bin:/bin")
    r = subprocess.run(
        [*build, "--wheel", "-o", str(tmp_path / "wheel"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "must not run" not in r.stdout + r.stderr
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    data = f"jupyter_gpuspawn-{__version__}.data/data/"
    ext = data + "share/jupyter/labextensions/jupyter-gpuspawn/"
    assert ext + "package.json" in names and ext + "install.json" in names
    assert any(n.startswith(ext + "static/") and n.endswith(".js") for n in names)
    install = json.loads(zipfile.ZipFile(wheel).read(ext + "install.json"))
    assert install["packageName"] == "jupyter-gpuspawn"


def test_pip_check_is_clean_where_the_hub_side_is_installed():
    """The hub's environment (here: .venv, with the hub, test and docs extras) has every
    requirement of every installed package; the user image's is checked in the integration tier."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
