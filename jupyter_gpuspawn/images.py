"""build-image: derive a hub-ready image from any base image that has Python (Debian, NGC, PyTorch,
conda).

The generated image
- installs ``jupyterhub`` pinned to the hub's own version and this package (status extension) into a
  venv at /opt/jupyter-gpuspawn that sees the base's own packages (``--system-site-packages``: NGC's
  torch stays usable), never touching the base's Python (works with PEP 668 "externally managed"
  system Pythons);
- installs JupyterLab only when the base has none;
- gets an entrypoint that turns any uid:gid into a named user with HOME = the mounted home, without
  root;
- is labelled ``org.jupyter.gpuspawn.ready=<version>`` and records the jupyterhub version it
  carries;
- has JupyterLab's news announcements off: offline GPU servers should not offer to fetch from the
  internet;
- starts its server about twice as fast (see SLOW_IMPORT_PACKAGE).
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import requires as dist_requires
from importlib.metadata import version as dist_version

from . import wheels
from ._version import __version__

READY_LABEL = "org.jupyter.gpuspawn.ready"
JUPYTERHUB_VERSION_LABEL = "org.jupyter.gpuspawn.jupyterhub-version"
VENV = "/opt/jupyter-gpuspawn"
NO_PYTHON_EXIT = 3
# how docker reports a RUN step that exited so (classic builder; BuildKit)
NO_PYTHON_FAILURE = re.compile(rf"(returned a non-zero code|exit code): {NO_PYTHON_EXIT}\b")

# Why build-image drops rfc3987-syntax from its venv (unless --keep-rfc3987-syntax): jsonschema >=
# 4.26 imports it for the "iri" formats, and it compiles ~35 Lark grammars at import; every Jupyter
# server imports jsonschema's format module at start (through jupyter_events), which costs ~1.7 s of
# CPU per server start here, half of it. No Jupyter schema uses those formats, and without the
# package jsonschema leaves them unchecked, as before 4.26. Upstream:
# python-jsonschema/jsonschema#1428, jupyter-server/jupyter_server#1559.
SLOW_IMPORT_PACKAGE = "rfc3987-syntax"
SLOW_IMPORT_NOTE = (
    "importing it compiles ~35 Lark grammars, ~1.7 s of CPU at every server start, and no Jupyter "
    "schema needs it (see config/images.md)"
)

ENTRYPOINT = r"""#!/bin/sh
# jupyter-gpuspawn entrypoint: make an arbitrary uid:gid a named user, then exec the command.
# Needs no root.
uid="$(id -u)"; gid="$(id -g)"
# passwd fields must not carry ':' or newlines, whatever the hub's user name is
name="$(printf '%s' "${JUPYTERHUB_USER:-user}" | tr -c 'A-Za-z0-9._@+-' '_' | cut -c1-32)"
home="${HOME:-/tmp}"
if ! getent passwd "$uid" >/dev/null 2>&1 && [ -w /etc/passwd ]; then
  if getent passwd "$name" >/dev/null 2>&1; then name="user$uid"; fi
  echo "$name:x:$uid:$gid:$name:$home:/bin/bash" >> /etc/passwd
fi
if ! getent group "$gid" >/dev/null 2>&1 && [ -w /etc/group ]; then
  echo "$name:x:$gid:" >> /etc/group
fi
export HOME="$home" USER="$name"
mkdir -p "$HOME/.local/share/jupyter/runtime" 2>/dev/null \
  || export JUPYTER_RUNTIME_DIR="/tmp/jupyter-runtime-$uid"
cd "$HOME" 2>/dev/null || cd /tmp
exec "$@"
"""


# An image reference as Docker's reference grammar has it (github.com/distribution/reference):
# [domain[:port]/]path-component[/path-component...][:tag][@digest], ASCII only. The base is written
# into the Dockerfile (FROM, comments, a quoted shell echo), so anything else (a newline, a space, a
# quote) is refused.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE_RE = re.compile(
    rf"(?:{_DOMAIN}(?::[0-9]{{1,5}})?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,128})?"
)


def check_image_reference(value, what: str = "--base") -> str:
    """``value`` if it is a valid image reference (e.g. nvcr.io/nvidia/pytorch:24.08-py3), else
    ValueError with a message that says what was wrong (the value is quoted short and escaped, so a
    newline shows as \\n)."""
    if not isinstance(value, str) or len(value) > 512 or not IMAGE_REFERENCE_RE.fullmatch(value):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:79] + "…"
        raise ValueError(
            f"{what} {shown} is not an image reference such as nvcr.io/nvidia/pytorch:24.08-py3 "
            "(lower-case name, optional :tag and @digest; no spaces or newlines)"
        )
    return value


@functools.lru_cache(maxsize=1)
def hub_jupyterhub_version() -> str:
    """The JupyterHub version installed here, which images are pinned to. ValueError if none is."""
    try:
        return dist_version("jupyterhub")
    except PackageNotFoundError:
        raise ValueError(
            "JupyterHub is not installed here, and build-image pins the image's JupyterHub to the "
            'hub\'s version: run it where `pip install "jupyter-gpuspawn[hub]"` installed the same '
            "JupyterHub version as the hub"
        ) from None


def server_requirements() -> str:
    """The user-server side's requirements (this package's base install, no extras), shell-quoted.
    Step 1 installs them; step 2 installs the package with --no-deps (a second resolve would want
    back what step 1 dropped on purpose, rfc3987-syntax), and ``pip check`` is clean because both
    come from the same metadata."""
    base = [r for r in dist_requires("jupyter-gpuspawn") or [] if "extra ==" not in r]
    return " ".join(shlex.quote(r.replace(" ", "")) for r in base)


def dockerfile(
    base: str,
    jupyterhub_version: str,
    *,
    wheel_name: str,
    ca_bundle: bool = False,
    install_python: bool = False,
    keep_rfc3987_syntax: bool = False,
) -> str:
    """The Dockerfile text for ``base``. The build context holds ``gpuspawn/`` (wheel, entrypoint,
    CA bundle). ValueError if ``base`` is not an image reference: it is written into the file as it
    is."""
    check_image_reference(base)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*\.whl", wheel_name):
        raise ValueError(f"wheel file name {wheel_name!r} must be a plain *.whl file name")
    if not re.fullmatch(r"[0-9A-Za-z.+-]{1,64}", jupyterhub_version):
        raise ValueError(f"jupyterhub version {jupyterhub_version!r} is not a version number")
    ca_lines = ""
    pip_cert = ""
    if ca_bundle:
        ca_lines = "COPY gpuspawn/ca-bundle.crt /etc/ssl/certs/jupyter-gpuspawn-ca.crt\n"
        pip_cert = "PIP_CERT=/etc/ssl/certs/jupyter-gpuspawn-ca.crt "
    return f"""# Generated by jupyter-gpuspawn {__version__} build-image. Base: {base}
FROM {base}
USER root
# pip settings an admin passes with --build-arg (a PyPI mirror): docker hands a build arg to RUN
# only when the Dockerfile declares it; unset ones stay unset
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
{ca_lines}# Step 1: jupyterhub (pinned to the hub's version) and the status extension's needs, in a
# venv that sees the base's own packages. Kept apart from step 2 so upgrading jupyter-gpuspawn
# reuses this layer.
RUN set -eu; \\
    PY=""; for p in /opt/conda/bin/python python3 python; do \\
      if command -v "$p" >/dev/null 2>&1; then PY="$(command -v "$p")"; break; fi; done; \\
    if [ -z "$PY" ] && [ "{int(install_python)}" = 1 ]; then \\
      echo "jupyter-gpuspawn [0/2]: the base has no Python;" \\
        "installing it with the base's package manager"; \\
      if command -v apt-get >/dev/null 2>&1; then \\
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive \\
          apt-get install -y -qq --no-install-recommends \\
          python3 python3-venv python3-pip ca-certificates && rm -rf /var/lib/apt/lists/*; \\
      elif command -v microdnf >/dev/null 2>&1; then \\
        microdnf install -y python3 python3-pip && microdnf clean all; \\
      elif command -v dnf >/dev/null 2>&1; then \\
        dnf install -y python3 python3-pip && dnf clean all; \\
      elif command -v apk >/dev/null 2>&1; then apk add --no-cache python3 py3-pip; fi; \\
      PY="$(command -v python3 || true)"; fi; \\
    if [ -z "$PY" ]; then \\
      echo "jupyter-gpuspawn: the base image {base} has no Python" \\
        "(looked for python3, python, /opt/conda/bin/python)." >&2; \\
      echo "jupyter-gpuspawn: choose a base with Python 3.10 or newer" \\
        "(NGC, PyTorch, conda, python:3.x), or pass --install-python." >&2; \\
      exit {NO_PYTHON_EXIT}; fi; \\
    echo "jupyter-gpuspawn [1/2]: installing jupyterhub {jupyterhub_version}" \\
      "with $PY ($("$PY" --version 2>&1))"; \\
    if ! "$PY" -m venv --system-site-packages {VENV} 2>/dev/null; then \\
      rm -rf {VENV}; "$PY" -m venv --without-pip --system-site-packages {VENV}; fi; \\
    if [ -x {VENV}/bin/pip ]; then PIP="{VENV}/bin/python -m pip"; \\
    else PIP="$PY -m pip --python {VENV}/bin/python"; fi; \\
    echo "$PIP" > {VENV}/.pip-command; \\
    LAB=""; {VENV}/bin/python -c "import jupyterlab" 2>/dev/null || LAB="jupyterlab"; \\
    {pip_cert}PIP_DISABLE_PIP_VERSION_CHECK=1 $PIP install --no-cache-dir --progress-bar off \\
      "jupyterhub=={jupyterhub_version}" {server_requirements()} $LAB; \\
    SLOW="$({VENV}/bin/python -c "import rfc3987_syntax; print(rfc3987_syntax.__file__)" \\
      2>/dev/null || true)"; \\
    case "$SLOW" in \\
      "") ;; \\
      {VENV}/*) if [ "{int(keep_rfc3987_syntax)}" = 0 ]; then \\
        $PIP uninstall -y -q {SLOW_IMPORT_PACKAGE}; \\
        echo "jupyter-gpuspawn [1/2]: removed {SLOW_IMPORT_PACKAGE} from {VENV}:" \\
          "{SLOW_IMPORT_NOTE}"; fi ;; \\
      *) echo "jupyter-gpuspawn [1/2]: note: the base's own {SLOW_IMPORT_PACKAGE} ($SLOW)" \\
          "is kept: {SLOW_IMPORT_NOTE}" ;; \\
    esac; \\
    rm -rf /root/.cache /var/lib/apt/lists/*
# Step 2: jupyter-gpuspawn itself and the entrypoint. /etc/passwd and /etc/group become writable
# so the entrypoint can add the student's uid at start without root; containers run with
# no-new-privileges and no capabilities, so an editable passwd grants nothing.
COPY gpuspawn/ /tmp/jupyter-gpuspawn/
RUN set -eu; \\
    echo "jupyter-gpuspawn [2/2]: installing jupyter-gpuspawn {__version__} and the entrypoint"; \\
    $(cat {VENV}/.pip-command) install --no-cache-dir --no-deps \\
      /tmp/jupyter-gpuspawn/{wheel_name}; \\
    install -m 0755 /tmp/jupyter-gpuspawn/entrypoint.sh \\
      /usr/local/bin/jupyter-gpuspawn-entrypoint; \\
    chmod 0666 /etc/passwd /etc/group; \\
    {VENV}/bin/jupyter labextension disable --level=sys_prefix \\
      "@jupyterlab/apputils-extension:announcements" \\
      >/dev/null 2>&1 || true; \\
    rm -rf /tmp/jupyter-gpuspawn /root/.cache; \\
    {VENV}/bin/jupyterhub-singleuser --version
ENV PATH={VENV}/bin:$PATH
LABEL {READY_LABEL}="{__version__}" {JUPYTERHUB_VERSION_LABEL}="{jupyterhub_version}"
ENTRYPOINT ["/usr/local/bin/jupyter-gpuspawn-entrypoint"]
CMD ["jupyterhub-singleuser"]
"""


def source_checkout() -> str | None:
    """The source tree this package runs from (an editable install or a checkout on sys.path), else
    None."""
    source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return source if os.path.exists(os.path.join(source, "pyproject.toml")) else None


def build_wheel(dest: str) -> str:
    """Put this package's wheel into ``dest`` and return its file name: built from the source
    checkout (labextension included) with pip, or, for a normal install, rebuilt offline from the
    installed files (wheels.wheel_from_installed). Raises wheels.WheelError (one line, says to pass
    --wheel) if neither works."""
    source = source_checkout()
    if source is None:
        return wheels.wheel_from_installed(dest)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dest, source]
    if subprocess.run(cmd).returncode != 0:
        raise wheels.WheelError(f"pip could not build a wheel from {source}; pass --wheel FILE")
    found = [f for f in os.listdir(dest) if f.endswith(".whl")]
    if not found:
        raise wheels.WheelError("no jupyter-gpuspawn wheel was produced; pass --wheel FILE")
    return found[0]


def build_image(
    base,
    tag,
    *,
    wheel=None,
    ca_bundle=None,
    build_args=(),
    labels=(),
    network=None,
    install_python=False,
    keep_rfc3987_syntax=False,
    out=sys.stdout,
) -> int:
    """Build ``tag`` from ``base`` with docker, streaming docker's progress to ``out``. Returns
    docker's exit code. ValueError for a ``base`` that is not an image reference; wheels.WheelError
    if no wheel can be had."""
    check_image_reference(base)
    jupyterhub_version = hub_jupyterhub_version()  # first: without JupyterHub nothing can be built
    with tempfile.TemporaryDirectory(prefix="gpuspawn-build-") as context:
        payload = os.path.join(context, "gpuspawn")
        os.mkdir(payload)
        if wheel:
            shutil.copy(wheel, payload)
            wheel_name = os.path.basename(wheel)
        else:
            wheel_name = build_wheel(payload)
        with open(os.path.join(payload, "entrypoint.sh"), "w") as f:
            f.write(ENTRYPOINT)
        if ca_bundle:
            shutil.copy(ca_bundle, os.path.join(payload, "ca-bundle.crt"))
        with open(os.path.join(context, "Dockerfile"), "w") as f:
            f.write(
                dockerfile(
                    base,
                    jupyterhub_version,
                    wheel_name=wheel_name,
                    ca_bundle=bool(ca_bundle),
                    install_python=install_python,
                    keep_rfc3987_syntax=keep_rfc3987_syntax,
                )
            )
        # a failed step leaves no container behind
        cmd = ["docker", "build", "--force-rm", "-t", tag]
        if network:
            cmd += ["--network", network]
        for arg in build_args:
            cmd += ["--build-arg", arg]
        for label in labels:
            cmd += ["--label", label]
        cmd.append(context)
        print(f"jupyter-gpuspawn: building {tag} from {base} …", file=out, flush=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        no_python = False
        for line in proc.stdout:
            # by the step's exit code: docker echoes the whole RUN command, message text included
            no_python = no_python or bool(NO_PYTHON_FAILURE.search(line))
            out.write(line)
            out.flush()
        code = proc.wait()
        if code and no_python:
            print(
                f"jupyter-gpuspawn: {base} has no Python; use a base with Python 3, or "
                f"--install-python.",
                file=out,
            )
        return code


@dataclass(frozen=True)
class ImageReadiness:
    image: str
    present: bool
    ready: bool = False
    jupyterhub_version: str | None = None
    size: int | None = None
    labelled: bool = False  # made by build-image (carries the ready label)
    # the engine's "sha256:…" (the same on every engine that loaded the same image)
    image_id: str = ""


def build_command(image: str) -> str:
    """The build-image command an admin can paste to make ``image`` hub-ready (the result is tagged
    locally). Every argument is shell-quoted: image names come from config files and are pasted into
    a shell."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    name, tag = last.split(":", 1) if ":" in last else (last, "latest")
    return shlex.join(
        ["jupyter-gpuspawn", "build-image", "--base", image, "--tag", f"local/{name}-hub:{tag}"]
    )


def assess_labels(image: str, inspect_data: dict) -> ImageReadiness:
    """Readiness as far as the image's labels tell (no container run)."""
    labels = (inspect_data.get("Config") or {}).get("Labels") or {}
    labelled = READY_LABEL in labels
    return ImageReadiness(
        image=image,
        present=True,
        ready=labelled,
        labelled=labelled,
        jupyterhub_version=labels.get(JUPYTERHUB_VERSION_LABEL),
        size=inspect_data.get("Size"),
        image_id=inspect_data.get("Id") or "",
    )


# The probe runs an image nobody has vetted yet: it gets the hardening of a user container and less.
PROBE_USER = "65534:65534"  # nobody:nogroup, never root
PROBE_HOST_CONFIG = dict(
    cap_drop=["ALL"],
    security_opt=["no-new-privileges:true"],
    mem_limit="256m",
    pids_limit=64,
    network_mode="none",
)
# CUDA images bake in NVIDIA_VISIBLE_DEVICES=all: on hosts with nvidia as the default runtime the
# probe would otherwise get every GPU.
PROBE_ENV = {"NVIDIA_VISIBLE_DEVICES": "void"}


def probe_singleuser(client, image: str) -> bool:
    """Does ``image`` have jupyterhub-singleuser on its PATH? Runs a throwaway, hardened container
    (blocking; docker-py APIClient). The container is removed however the probe ends, even when it
    cannot start."""
    container = client.create_container(
        image,
        entrypoint=["/bin/sh", "-c"],
        command=["command -v jupyterhub-singleuser"],
        user=PROBE_USER,
        environment=dict(PROBE_ENV),
        network_disabled=True,
        labels={"org.jupyter.gpuspawn.probe": "1"},
        host_config=client.create_host_config(**PROBE_HOST_CONFIG),
    )
    try:
        client.start(container["Id"])
        return client.wait(container["Id"], timeout=60).get("StatusCode") == 0
    except Exception:
        return False
    finally:
        client.remove_container(container["Id"], force=True)


def inspect_readiness(client, image: str, probe_cache: dict | None = None) -> ImageReadiness:
    """Readiness of a local image (blocking): the build-image label, else a probe for
    jupyterhub-singleuser.

    Probe results are kept in ``probe_cache`` by image ID, so an unlabelled image is probed once per
    build.
    """
    import docker

    try:
        data = client.inspect_image(image)
    except docker.errors.ImageNotFound:
        return ImageReadiness(image=image, present=False)
    status = assess_labels(image, data)
    if status.ready:
        return status
    cache = probe_cache if probe_cache is not None else {}
    if data["Id"] not in cache:
        cache[data["Id"]] = probe_singleuser(client, image)
    return ImageReadiness(image, True, cache[data["Id"]], None, status.size, False, data["Id"])


def version_mismatch(image_version: str | None, hub_version: str) -> bool:
    """Major.minor differ between the image's jupyterhub and the hub's (patch releases are
    compatible)."""
    if not image_version:
        return False
    return image_version.split(".")[:2] != hub_version.split(".")[:2]
