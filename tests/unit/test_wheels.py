"""build-image from a normal install: the wheel is rebuilt from the installed files (RECORD),
offline."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import PathDistribution
from pathlib import Path

import pytest

from jupyter_gpuspawn import __version__, cli, images, wheels

LIB = Path(
    sysconfig.get_paths("posix_prefix", vars={"base": "/B", "platbase": "/B"})["purelib"]
).relative_to("/B")
STEM = f"jupyter_gpuspawn-{__version__}"
PACKAGE_FILES = {
    "jupyter_gpuspawn/__init__.py": f"__version__ = {__version__!r}\n",
    "jupyter_gpuspawn/status/__init__.py": "# status\n",
    "jupyter_gpuspawn/labextension/package.json": '{"name": "jupyter-gpuspawn"}\n',
}
DATA_FILES = {
    "share/jupyter/labextensions/jupyter-gpuspawn/package.json": '{"name": "jupyter-gpuspawn"}\n',
    "share/jupyter/labextensions/jupyter-gpuspawn/static/remoteEntry.abc.js": "var x = 1;\n",
    "etc/jupyter/jupyter_server_config.d/jupyter_gpuspawn.json": (
        '{"ServerApp": {"jpserver_extensions": {"jupyter_gpuspawn": true}}}\n'
    ),
}
METADATA = (
    f"Metadata-Version: 2.3\nName: jupyter-gpuspawn\nVersion: {__version__}\n"
    "Requires-Dist: pyyaml>=6\n"
)
ENTRY_POINTS = (
    "[console_scripts]\njupyter-gpuspawn = jupyter_gpuspawn.cli:main\n\n"
    "[jupyterhub.spawners]\ngpudocker = jupyter_gpuspawn.spawner:GPUDockerSpawner\n"
)


def install_layout(prefix: Path, *, record=True, editable=False) -> Path:
    """What an installer leaves for jupyter-gpuspawn under ``prefix`` (a venv or --prefix): package,
    byte code, dist-info with installer files, data files and the console script, all listed in
    RECORD. Returns dist-info."""
    site = prefix / LIB
    dist_info = site / f"{STEM}.dist-info"
    files = {}
    for rel, text in PACKAGE_FILES.items():
        files[site / rel] = text
    files[site / "jupyter_gpuspawn/__pycache__/__init__.cpython-311.pyc"] = "bytecode"
    for rel, text in DATA_FILES.items():
        files[prefix / rel] = text
    files[prefix / "bin/jupyter-gpuspawn"] = (
        "#!/usr/bin/python\nfrom jupyter_gpuspawn.cli import main\nmain()\n"
    )
    files[dist_info / "METADATA"] = METADATA
    files[dist_info / "WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: hatchling 1.27.0\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n"
    )
    files[dist_info / "entry_points.txt"] = ENTRY_POINTS
    files[dist_info / "licenses/LICENSE"] = "BSD-3-Clause\n"
    files[dist_info / "INSTALLER"] = "pip\n"
    files[dist_info / "REQUESTED"] = ""
    if editable:
        files[dist_info / "direct_url.json"] = json.dumps(
            {"url": "file:///src", "dir_info": {"editable": True}}
        )
    lines = []
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        lines.append(f"{os.path.relpath(path, site)},sha256=x,{len(text)}")
    if record:
        (dist_info / "RECORD").write_text("\n".join(lines + [f"{STEM}.dist-info/RECORD,,"]) + "\n")
    return dist_info


def wheel_contents(path) -> dict:
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        return {name: zf.read(name) for name in zf.namelist()}


def check_record(contents: dict):
    """RECORD lists every other file with its sha256 (urlsafe base64, no padding) and size, and
    itself."""
    rows = list(csv.reader(io.StringIO(contents[f"{STEM}.dist-info/RECORD"].decode())))
    assert sorted(r[0] for r in rows) == sorted(contents)
    for name, digest, size in rows:
        if name == f"{STEM}.dist-info/RECORD":
            assert (digest, size) == ("", "")
            continue
        expected = (
            base64.urlsafe_b64encode(hashlib.sha256(contents[name]).digest()).rstrip(b"=").decode()
        )
        assert (digest, int(size)) == (f"sha256={expected}", len(contents[name])), name


def test_wheel_is_rebuilt_from_the_installed_files(tmp_path):
    dist_info = install_layout(tmp_path / "venv")
    name = wheels.wheel_from_installed(str(tmp_path), PathDistribution(dist_info))
    assert name == f"{STEM}-py3-none-any.whl"
    contents = wheel_contents(tmp_path / name)
    expected = (
        set(PACKAGE_FILES)
        | {f"{STEM}.data/data/{rel}" for rel in DATA_FILES}
        | {
            f"{STEM}.dist-info/{f}"
            for f in ("METADATA", "WHEEL", "entry_points.txt", "licenses/LICENSE", "RECORD")
        }
    )
    assert set(contents) == expected  # no byte code, console script, INSTALLER or REQUESTED
    for rel, text in PACKAGE_FILES.items():
        assert contents[rel].decode() == text
    for rel, text in DATA_FILES.items():
        assert contents[f"{STEM}.data/data/{rel}"].decode() == text
    assert contents[f"{STEM}.dist-info/METADATA"].decode() == METADATA
    assert contents[f"{STEM}.dist-info/entry_points.txt"].decode() == ENTRY_POINTS
    wheel = contents[f"{STEM}.dist-info/WHEEL"].decode().splitlines()
    assert (
        wheel[0] == "Wheel-Version: 1.0"
        and "Root-Is-Purelib: true" in wheel
        and "Tag: py3-none-any" in wheel
    )
    check_record(contents)
    # the same files make the same wheel, byte for byte (docker's layer cache stays warm)
    again = tmp_path / "again"
    again.mkdir()
    wheels.wheel_from_installed(str(again), PathDistribution(dist_info))
    assert (again / name).read_bytes() == (tmp_path / name).read_bytes()


def test_pip_installs_the_rebuilt_wheel_and_it_rebuilds_to_the_same_wheel(tmp_path):
    """The rebuilt wheel installs with pip (offline) into a fresh venv, data files land where
    Jupyter looks, and the install pip made (its own RECORD, byte code, script, INSTALLER,
    direct_url.json) gives back the same wheel.

    pip runs against the throwaway venv (--python): `pip install --prefix` would first uninstall the
    jupyter-gpuspawn of the environment running the tests."""
    first = tmp_path / "first"
    first.mkdir()
    name = wheels.wheel_from_installed(
        str(first), PathDistribution(install_layout(tmp_path / "venv"))
    )
    venv = tmp_path / "fresh-venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    lib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--disable-pip-version-check",
            "-q",
            str(first / name),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    for rel, text in DATA_FILES.items():
        assert (venv / rel).read_text() == text
    for rel, text in PACKAGE_FILES.items():
        assert (lib / rel).read_text() == text
    assert os.access(venv / "bin/jupyter-gpuspawn", os.X_OK)  # written by pip from entry_points.txt
    installed = PathDistribution(lib / f"{STEM}.dist-info")
    assert any(str(f).startswith("..") for f in installed.files)

    second = tmp_path / "second"
    second.mkdir()
    assert wheels.wheel_from_installed(str(second), installed) == name
    assert wheel_contents(second / name) == wheel_contents(first / name)


def test_build_image_from_a_normal_install_uses_the_rebuilt_wheel(tmp_path, monkeypatch):
    dist = PathDistribution(install_layout(tmp_path / "venv"))
    monkeypatch.setattr(images, "source_checkout", lambda: None)
    monkeypatch.setattr(
        wheels.metadata, "distribution", lambda name: dist if name == "jupyter-gpuspawn" else None
    )

    def no_pip(*args, **kwargs):
        raise AssertionError(f"no pip, no network: {args}")

    monkeypatch.setattr(images.subprocess, "run", no_pip)
    dest = tmp_path / "context"
    dest.mkdir()
    assert images.build_wheel(str(dest)) == f"{STEM}-py3-none-any.whl"
    assert os.listdir(dest) == [f"{STEM}-py3-none-any.whl"]


@pytest.mark.parametrize(
    "layout, reason",
    [
        (dict(record=False), "its metadata has no RECORD file list"),
        (dict(editable=True), "it is an editable install"),
    ],
)
def test_no_wheel_from_an_incomplete_install_is_one_line_and_exit_2(
    tmp_path, monkeypatch, capsys, layout, reason
):
    dist = PathDistribution(install_layout(tmp_path / "venv", **layout))
    with pytest.raises(wheels.WheelError, match=reason):
        wheels.wheel_from_installed(str(tmp_path), dist)

    monkeypatch.setattr(images, "source_checkout", lambda: None)
    monkeypatch.setattr(wheels.metadata, "distribution", lambda name: dist)
    monkeypatch.setattr(images, "hub_jupyterhub_version", lambda: "6.1.1")

    def no_docker(*args, **kwargs):
        raise AssertionError("docker must not run without a wheel")

    monkeypatch.setattr(images.subprocess, "Popen", no_docker)
    assert cli.main(["build-image", "--base", "python:3.12-slim", "--tag", "local/x:1"]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith(
        "error: cannot rebuild the jupyter-gpuspawn wheel"
    )
    assert reason in err and "pass --wheel FILE" in err and "Traceback" not in err


def test_missing_installed_files_are_named(tmp_path):
    dist_info = install_layout(tmp_path / "venv")
    (tmp_path / "venv/share/jupyter/labextensions/jupyter-gpuspawn/package.json").unlink()
    with pytest.raises(
        wheels.WheelError,
        match=r"1 installed file\(s\) are missing, e\.g\. .*package\.json; "
        r"pass --wheel FILE",
    ):
        wheels.wheel_from_installed(str(tmp_path), PathDistribution(dist_info))
