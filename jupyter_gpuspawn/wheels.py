"""Rebuild this package's wheel from its installed files, offline (build-image from a normal
install).

An installed distribution lists its files, with hashes, in ``*.dist-info/RECORD``. Read back, that
list is the wheel it came from, minus what the installer made (scripts, byte code, INSTALLER,
REQUESTED, direct_url.json):
- files under the install's library directory go to the wheel's root, the dist-info files to
  ``<name>-<version>.dist-info/``;
- files under the install's data directory (the built labextension in
  ``share/jupyter/labextensions/...``, the server-extension switch in
  ``etc/jupyter/jupyter_server_config.d/``) go to ``<name>-<version>.data/data/``, where an
  installer puts them back in the same place;
- console scripts are left out: installers write them from entry_points.txt;
- WHEEL and RECORD are written anew (RECORD: sha256, urlsafe base64 without padding, and the size).
Pure Python (zipfile), no pip, no network. Timestamps are fixed, so the same files make the same
wheel (and docker's layer cache stays warm).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import sysconfig
import zipfile
from importlib import metadata

DIST_NAME = "jupyter-gpuspawn"
PACKAGE = "jupyter_gpuspawn"
# Made by the installer for this install only; a wheel does not carry them (WHEEL and RECORD are
# written anew).
INSTALLER_FILES = {
    "INSTALLER",
    "REQUESTED",
    "direct_url.json",
    "RECORD",
    "RECORD.jws",
    "RECORD.p7s",
    "WHEEL",
}
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip file can hold


class WheelError(RuntimeError):
    """No wheel can be rebuilt from this install; the message is one line and says what to do
    instead."""


def _fail(reason: str):
    raise WheelError(
        f"cannot rebuild the {DIST_NAME} wheel from this installation: {reason}; pass --wheel FILE "
        f"(a {DIST_NAME} wheel, e.g. built with `pip wheel --no-deps <source checkout>`)"
    )


def wheel_stem(name: str, version: str) -> str:
    """``<name>-<version>`` as wheel file names write it (binary distribution format: normalised
    name, and no "-" inside either part)."""
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version.replace('-', '_')}"


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode(
        "ascii"
    )


def data_root(location: str) -> str | None:
    """The data directory of the install whose library directory is ``location`` (e.g. ``<venv>``
    for
    ``<venv>/lib/python3.11/site-packages``): the first install scheme whose purelib, with its base
    left open, ends like ``location``. None if no scheme fits."""
    location = os.path.normpath(os.path.abspath(location))
    marker = os.path.join(os.sep, "__jupyter_gpuspawn_base__")
    bases = {
        "base": marker,
        "platbase": marker,
        "userbase": marker,
        "installed_base": marker,
        "installed_platbase": marker,
    }
    for scheme in sysconfig.get_scheme_names():
        try:
            paths = sysconfig.get_paths(scheme, vars=bases)
        except (KeyError, ValueError):
            continue
        lib, data = paths.get("purelib", ""), paths.get("data", "")
        if not (lib.startswith(marker) and data.startswith(marker)):
            continue
        suffix = os.path.normpath(lib[len(marker) :])
        if location.endswith(suffix) and len(location) > len(suffix):
            base = location[: -len(suffix)] or os.sep
            return os.path.normpath(base + data[len(marker) :])
    return None


def _console_scripts(dist) -> set:
    names = set()
    for ep in dist.entry_points:
        if ep.group in ("console_scripts", "gui_scripts"):
            names.update({ep.name, ep.name + ".exe", ep.name + "-script.py"})
    return names


def wheel_entries(dist) -> list[tuple[str, str]]:
    """[(path in the wheel, installed file)] for ``dist``, an importlib.metadata Distribution,
    leaving out what the installer made. Raises WheelError if the install cannot give a complete
    wheel."""
    files = dist.files
    if not files:
        _fail("its metadata has no RECORD file list")
    direct_url = dist.read_text("direct_url.json")
    if direct_url and json.loads(direct_url).get("dir_info", {}).get("editable"):
        _fail("it is an editable install (build from the source checkout instead)")
    stem = wheel_stem(dist.metadata["Name"], dist.version)
    dist_info, data_dir = f"{stem}.dist-info", f"{stem}.data/data"
    location = os.path.normpath(str(dist.locate_file("")))
    data = data_root(location)
    scripts = _console_scripts(dist)
    entries = []
    for path in files:
        parts = path.parts
        if "__pycache__" in parts or path.suffix in (".pyc", ".pyo"):
            continue  # byte code is the installer's
        installed = os.path.normpath(os.path.join(location, str(path)))
        # outside the library directory: data files and scripts
        if path.is_absolute() or ".." in parts:
            if path.name in scripts:
                continue  # installers write console scripts from entry_points.txt
            if data is None or os.path.commonpath([data, installed]) != data:
                _fail(f"{path} is outside its library and data directories")
            entries.append(
                (f"{data_dir}/{os.path.relpath(installed, data).replace(os.sep, '/')}", installed)
            )
        elif parts[0].endswith(".dist-info"):
            if len(parts) == 2 and parts[1] in INSTALLER_FILES:
                continue
            entries.append(("/".join((dist_info,) + parts[1:]), installed))
        else:
            entries.append(("/".join(parts), installed))
    names = {arcname for arcname, _ in entries}
    for needed in (
        f"{dist_info}/METADATA",
        f"{dist_info}/entry_points.txt",
        f"{PACKAGE}/__init__.py",
    ):
        if needed not in names:
            _fail(f"{needed} is not among its installed files")
    missing = [installed for _, installed in entries if not os.path.isfile(installed)]
    if missing:
        _fail(f"{len(missing)} installed file(s) are missing, e.g. {missing[0]}")
    return entries


def _tags(dist) -> list[str]:
    """The wheel tags from the installed WHEEL file, else py3-none-any (this package is pure
    Python)."""
    text = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]
    return [t for t in tags if re.fullmatch(r"[\w.]+-[\w.]+-[\w.]+", t)] or ["py3-none-any"]


def _wheel_file(dist) -> bytes:
    lines = [
        "Wheel-Version: 1.0",
        f"Generator: {PACKAGE} {dist.version} (rebuilt from the installed files)",
        "Root-Is-Purelib: true",
    ] + [f"Tag: {tag}" for tag in _tags(dist)]
    return ("\n".join(lines) + "\n").encode()


def _add(zf: zipfile.ZipFile, arcname: str, data: bytes, mode: int = 0o644):
    info = zipfile.ZipInfo(arcname, date_time=ZIP_DATE)
    # a regular file with its permission bits
    info.external_attr = (0o100000 | (mode & 0o777)) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def wheel_from_installed(dest: str, dist=None) -> str:
    """Write the wheel of ``dist`` (an importlib.metadata Distribution; default: the installed
    jupyter-gpuspawn) into the directory ``dest`` and return its file name. Raises WheelError (one
    line) when the install cannot give a complete wheel."""
    if dist is None:
        try:
            dist = metadata.distribution(DIST_NAME)
        except metadata.PackageNotFoundError:
            _fail("no installed distribution metadata was found")
    entries = wheel_entries(dist)
    stem = wheel_stem(dist.metadata["Name"], dist.version)
    dist_info = f"{stem}.dist-info"
    filename = f"{stem}-{_tags(dist)[0]}.whl"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(os.path.join(dest, filename), "w") as zf:
        # the dist-info last, as wheel builders write it
        for arcname, installed in sorted(
            entries, key=lambda e: (e[0].startswith(dist_info + "/"), e[0])
        ):
            with open(installed, "rb") as f:
                content = f.read()
            _add(zf, arcname, content, os.stat(installed).st_mode)
            writer.writerow((arcname, record_hash(content), len(content)))
        wheel = _wheel_file(dist)
        _add(zf, f"{dist_info}/WHEEL", wheel)
        writer.writerow((f"{dist_info}/WHEEL", record_hash(wheel), len(wheel)))
        writer.writerow((f"{dist_info}/RECORD", "", ""))
        _add(zf, f"{dist_info}/RECORD", record.getvalue().encode())
    return filename
