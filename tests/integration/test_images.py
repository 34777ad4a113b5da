"""Hub-ready images: build-image output, preflight refusals, the images command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from jupyter_gpuspawn import __version__
from jupyter_gpuspawn.images import hub_jupyterhub_version

from .conftest import gpuspawn_containers
from .hub import TEST_IMAGE

CLI = os.path.join(os.path.dirname(sys.executable), "jupyter-gpuspawn")


def docker(*args, **kwargs):
    return subprocess.run(["docker", *args], capture_output=True, text=True, **kwargs)


def test_setup_built_the_singleuser_image_with_build_image(docker_engine):
    # scripts/setup made TEST_IMAGE with build-image from a registry-less Debian base (Python, no
    # Jupyter)
    labels = json.loads(docker("image", "inspect", TEST_IMAGE, check=True).stdout)[0]["Config"][
        "Labels"
    ]
    assert labels["org.jupyter.gpuspawn.ready"] == __version__
    assert labels["org.jupyter.gpuspawn.jupyterhub-version"] == hub_jupyterhub_version()
    out = docker(
        "run",
        "--rm",
        "--user",
        "234567:234567",
        "-e",
        "HOME=/tmp/h",
        "-e",
        "JUPYTERHUB_USER=zoe",
        TEST_IMAGE,
        "sh",
        "-c",
        "id -un; echo $HOME; jupyterhub-singleuser --version",
        check=True,
    ).stdout
    assert out.split() == ["zoe", "/tmp/h", hub_jupyterhub_version()]
    # the image holds the user-server side only (no hub extra), and pip finds nothing missing
    check = docker(
        "run", "--rm", "--entrypoint", "/opt/jupyter-gpuspawn/bin/python", TEST_IMAGE,
        "-m", "pip", "check",
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    shown = docker(
        "run", "--rm", "--entrypoint", "/opt/jupyter-gpuspawn/bin/python", TEST_IMAGE,
        "-c", "import importlib.util as u; print(u.find_spec('dockerspawner') is None)",
    )  # fmt: skip
    assert shown.stdout.strip() == "True", shown.stderr


def test_image_that_cannot_run_a_hub_server_is_refused_before_anything_starts(make_hub):
    hub = make_hub(
        n_gpus=1,
        extra_config="""
c.GPUDockerSpawner.allowed_images = {"ready": "local/gpuspawn-singleuser:latest",
                                     "raw": "local/base:bookworm", "gone": "local/not-built:1"}
c.GPUDockerSpawner.pull_policy = "never"
""",
    )
    hub.create_users("vic")
    r = hub.spawn("vic", {"image": "raw", "gpus": 1})
    assert r.status_code == 400
    message = r.json()["message"]
    assert "local/base:bookworm cannot run a JupyterHub server" in message
    assert (
        "jupyter-gpuspawn build-image --base local/base:bookworm --tag local/base-hub:bookworm"
        in message
    )

    r = hub.spawn("vic", {"image": "gone", "gpus": 1})
    assert r.status_code == 400 and "local/not-built:1 is not on this server" in r.json()["message"]
    assert gpuspawn_containers() == []
    assert docker("ps", "-aq", "--filter", "label=org.jupyter.gpuspawn.probe").stdout.strip() == ""
    hub.spawn_ready("vic", {"image": "ready", "gpus": 1})  # nothing was held


def test_build_image_refuses_a_base_without_python(docker_engine):
    docker(
        "build",
        "-q",
        "-t",
        "local/base-nopython:bookworm",
        "-",
        input="FROM local/base:bookworm\nRUN rm -f /usr/bin/python3* /usr/bin/python*\n",
        check=True,
    )
    tag = "local/should-not-exist:1"
    r = subprocess.run(
        [CLI, "build-image", "--base", "local/base-nopython:bookworm", "--tag", tag],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0
    assert "local/base-nopython:bookworm has no Python" in r.stdout + r.stderr
    assert docker("image", "inspect", tag).returncode != 0
    # the failed build step's container is gone too (docker build keeps it unless --force-rm)
    leftovers = docker(
        "ps", "-aq", "--filter", "ancestor=local/base-nopython:bookworm"
    ).stdout.split()
    assert leftovers == [], leftovers


def test_images_command_is_the_admins_checklist(make_hub):
    hub = make_hub(
        n_gpus=1,
        extra_config="""
c.GPUDockerSpawner.allowed_images = {"ready": "local/gpuspawn-singleuser:latest",
                                     "raw": "local/base:bookworm"}
""",
    )
    r = subprocess.run(
        [CLI, "images", "-f", hub.config_file, "--json"], capture_output=True, text=True
    )
    assert r.returncode == 1  # one image is not ready
    rows = {row["image"]: row for row in json.loads(r.stdout)}
    assert (
        rows[TEST_IMAGE]["ready"]
        and rows[TEST_IMAGE]["jupyterhub_version"] == hub_jupyterhub_version()
    )
    assert rows[TEST_IMAGE]["size"] > 0
    assert rows["local/base:bookworm"]["present"] and not rows["local/base:bookworm"]["ready"]


def test_built_image_lists_both_extensions_enabled_and_ok(docker_engine):
    out = docker(
        "run",
        "--rm",
        "--user",
        "234567:234567",
        "-e",
        "HOME=/tmp",
        "-e",
        "NO_COLOR=1",
        TEST_IMAGE,
        "sh",
        "-c",
        "jupyter labextension list 2>&1; jupyter server extension list 2>&1",
        check=True,
    ).stdout
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert re.search(r"jupyter-gpuspawn v[\d.]+ enabled OK", plain), plain
    assert "jupyter_gpuspawn enabled" in plain and re.search(
        r"jupyter_gpuspawn [\d.]+ OK", plain
    ), plain
    # listed among disabled: no news fetching offline
    assert "apputils-extension:announcements" in plain


def test_built_image_server_start_skips_the_slow_iri_validator(docker_engine):
    # jupyter_events imports jsonschema's format checkers at every server start; with rfc3987-syntax
    # there that import compiles ~35 Lark grammars (~1.7 s of CPU). build-image removed it from the
    # venv.
    probe = (
        "import sys, jupyter_events.validators, jsonschema; "
        "print('rfc3987_syntax' in sys.modules, 'uri' in "
        "jsonschema.Draft7Validator.FORMAT_CHECKER.checkers)"
    )
    out = docker(
        "run",
        "--rm",
        "--user",
        "234567:234567",
        "-e",
        "HOME=/tmp",
        TEST_IMAGE,
        "python",
        "-c",
        probe,
        check=True,
    ).stdout.split()
    # the slow module is not loaded; the other format checks still are
    assert out == ["False", "True"], out


def test_jupyterhub_version_mismatch_is_a_warning_in_progress(make_hub):
    docker(
        "build",
        "-q",
        "-t",
        "local/gpuspawn-old-hub:1",
        "-",
        input=f"FROM {TEST_IMAGE}\nLABEL org.jupyter.gpuspawn.jupyterhub-version=5.0.0\n",
        check=True,
    )
    hub = make_hub(
        n_gpus=1,
        extra_config="""
c.GPUDockerSpawner.allowed_images = {"old": "local/gpuspawn-old-hub:1"}
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}
""",
    )
    hub.create_users("olga")
    assert hub.spawn("olga", {"image": "old"}).status_code == 202
    messages = hub.progress_messages("olga")
    assert any(
        f"carries JupyterHub 5.0.0, the hub runs {hub_jupyterhub_version()}" in m for m in messages
    ), messages
    hub.wait_ready("olga")  # a warning, not a refusal


def test_build_image_from_a_wheel_install_needs_no_checkout_and_no_index(docker_engine, tmp_path):
    # An admin's install: the package from a wheel (not editable), run from outside any checkout, on
    # a server whose package index knows no jupyter-gpuspawn release. build-image rebuilds the wheel
    # from the installed files (labextension included) instead of downloading it.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), root],
        check=True,
        capture_output=True,
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    subprocess.run([*pip, *map(str, wheels.glob("*.whl"))], check=True, capture_output=True)
    # its dependencies (jupyterhub, docker, …) from the test environment, appended after the venv's
    # own packages: the venv's non-editable jupyter_gpuspawn comes first, the checkout is nowhere on
    # the path
    python = str(venv / "bin" / "python")

    def ask(interpreter, code):
        return subprocess.run(
            [interpreter, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path
        ).stdout.strip()

    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    with open(os.path.join(ask(python, purelib), "test-deps.pth"), "w") as f:
        f.write(ask(sys.executable, purelib) + "\n")
    where = ask(python, "import jupyter_gpuspawn; print(jupyter_gpuspawn.__file__)")
    assert where.startswith(str(venv)), where
    tag = "local/gpuspawn-from-wheel:test"
    # the same base and options as scripts/setup, so Docker reuses its first (pip install
    # jupyterhub) layer
    r = subprocess.run(
        [
            str(venv / "bin" / "jupyter-gpuspawn"),
            "build-image",
            "--base",
            "local/base-cudalike:bookworm",
            "--tag",
            tag,
            "--network",
            "host",
            "--ca-bundle",
            "/etc/ssl/certs/ca-certificates.crt",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, PIP_NO_INDEX="1"),
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "pip download" not in r.stdout + r.stderr
    try:
        out = docker(
            "run",
            "--rm",
            "--user",
            "234567:234567",
            "-e",
            "HOME=/tmp",
            "-e",
            "NO_COLOR=1",
            tag,
            "sh",
            "-c",
            "jupyter labextension list 2>&1; jupyter server extension list 2>&1",
            check=True,
        ).stdout
        plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
        assert re.search(r"jupyter-gpuspawn v[\d.]+ enabled OK", plain), plain
        assert "jupyter_gpuspawn enabled" in plain and re.search(
            r"jupyter_gpuspawn [\d.]+ OK", plain
        ), plain
    finally:
        docker("rmi", "-f", tag)
