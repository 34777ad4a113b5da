from __future__ import annotations

import pytest

from jupyter_gpuspawn import __version__
from jupyter_gpuspawn.images import (ENTRYPOINT, assess_labels, build_command, dockerfile, version_mismatch)


@pytest.mark.parametrize("base", ["continuumio/miniconda3:24.7.1-0", "nvcr.io/nvidia/pytorch:24.08-py3",
                                  "nvidia/cuda:12.4.1-runtime-ubuntu22.04"])
def test_dockerfile_pins_jupyterhub_and_sets_the_entrypoint(base):
    text = dockerfile(base, "6.1.1", wheel_name="jupyter_gpuspawn-0.1.0-py3-none-any.whl")
    assert text.splitlines()[1] == f"FROM {base}"
    assert '"jupyterhub==6.1.1"' in text
    assert 'ENTRYPOINT ["/usr/local/bin/jupyter-gpuspawn-entrypoint"]' in text
    assert 'CMD ["jupyterhub-singleuser"]' in text
    assert f'org.jupyter.gpuspawn.ready="{__version__}"' in text
    assert 'org.jupyter.gpuspawn.jupyterhub-version="6.1.1"' in text
    # conda's python is preferred (Miniconda bases), then the system's (NGC, Debian/Ubuntu)
    assert "for p in /opt/conda/bin/python python3 python" in text
    assert "--system-site-packages" in text  # the base's own torch/tensorflow stay importable
    assert "--no-cache-dir" in text and "/var/lib/apt/lists/*" in text
    assert "PIP_CERT" not in text


def test_dockerfile_with_ca_bundle():
    text = dockerfile("python:3.12-slim", "6.1.1", wheel_name="w.whl", ca_bundle=True)
    assert "COPY gpuspawn/ca-bundle.crt" in text and "PIP_CERT=" in text


def test_entrypoint_never_needs_root_and_sanitises_the_name():
    assert "sudo" not in ENTRYPOINT and "su " not in ENTRYPOINT
    assert "tr -c 'A-Za-z0-9._@+-' '_'" in ENTRYPOINT
    assert ENTRYPOINT.rstrip().endswith('exec "$@"')


def test_build_command_suggests_a_local_tag():
    assert build_command("nvcr.io/nvidia/pytorch:24.08-py3") == \
        "jupyter-gpuspawn build-image --base nvcr.io/nvidia/pytorch:24.08-py3 --tag local/pytorch-hub:24.08-py3"
    assert build_command("ubuntu").endswith("--tag local/ubuntu-hub:latest")


def test_readiness_from_labels():
    ready = assess_labels("x", {"Config": {"Labels": {"org.jupyter.gpuspawn.ready": "0.1.0",
                                                      "org.jupyter.gpuspawn.jupyterhub-version": "5.2.1"}},
                                "Size": 10})
    assert ready.ready and ready.jupyterhub_version == "5.2.1" and ready.size == 10
    assert not assess_labels("x", {"Config": {"Labels": None}}).ready


def test_version_mismatch_is_major_minor():
    assert version_mismatch("5.2.1", "6.1.1")
    assert not version_mismatch("6.1.0", "6.1.1")
    assert not version_mismatch(None, "6.1.1")


def test_install_python_only_when_asked():
    plain = dockerfile("nvidia/cuda:12.4.1-runtime-ubuntu22.04", "6.1.1", wheel_name="w.whl")
    assert 'if [ -z "$PY" ] && [ "0" = 1 ]' in plain
    asked = dockerfile("r-base:4.4.1", "6.1.1", wheel_name="w.whl", install_python=True)
    assert 'if [ -z "$PY" ] && [ "1" = 1 ]' in asked and "python3-venv" in asked


def test_slow_iri_validator_is_dropped_from_the_venv_unless_kept():
    default = dockerfile("python:3.12-slim", "6.1.1", wheel_name="w.whl")
    assert "/opt/jupyter-gpuspawn/*) if [ \"0\" = 0 ]; then $PIP uninstall -y -q rfc3987-syntax" in default
    kept = dockerfile("python:3.12-slim", "6.1.1", wheel_name="w.whl", keep_rfc3987_syntax=True)
    assert "/opt/jupyter-gpuspawn/*) if [ \"1\" = 0 ]" in kept
    # only the venv's copy is ever removed; a base's own copy is reported, never touched
    assert "note: the base's own rfc3987-syntax" in default
