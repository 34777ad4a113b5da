"""Hostile user_options through the REST API: always 400, never a container, never a held GPU."""

from __future__ import annotations

import pytest

from .conftest import gpuspawn_containers

HOSTILE = [
    {"gpus": -1},
    {"gpus": 10**30},
    {"gpus": 1.5},
    {"gpus": 1.0},
    {"gpus": "1"},
    {"gpus": "all"},
    {"gpus": [1]},
    {"gpus": {"count": 1}},
    {"gpus": True},
    {"gpus": None},
    {"gpus": 5},
    {"image": "alpine:latest"},
    {"image": "../../etc/passwd"},
    {"image": ["local/gpuspawn-test:latest"]},
    {"image": "x" * 10_000},
    {"course": "pytorch"},
    {"env": {"NVIDIA_VISIBLE_DEVICES": "all"}},
    {"NVIDIA_VISIBLE_DEVICES": "all"},
    {"environment": {"LD_PRELOAD": "/tmp/evil.so"}},
    {"LD_PRELOAD": "/tmp/evil.so"},
    {"extra_host_config": {"privileged": True}},
    {"volumes": {"/": "/host"}},
    {"user": "0:0"},
    {"gpus": 1, "device_requests": [{"count": -1}]},
    {"x" * 10_000: 1},
]


def test_hostile_user_options_are_refused(make_hub):
    hub = make_hub(n_gpus=4)
    hub.create_users("mallory", "honest")
    for options in HOSTILE:
        r = hub.spawn("mallory", options)
        assert r.status_code == 400, (
            options if len(repr(options)) < 200 else "long",
            r.status_code,
            r.text[:300],
        )
        message = r.json()["message"]
        assert message and "Traceback" not in message and len(message) < 500
        assert hub.server("mallory") is None
    assert gpuspawn_containers() == []
    # nothing was held: an honest user can take every GPU
    hub.spawn_ready("honest", {"gpus": 4})


@pytest.mark.parametrize(
    "body", ['{"user_options": "gpus=1"}', "[1, 2]", '"gpus=1"', '{"user_options": [1]}']
)
def test_malformed_bodies_are_refused(make_hub, body):
    # JupyterHub 6 refuses a body that is not an object itself; JupyterHub 5 hands it to the spawner
    # as the options, which must refuse it the same way and leave no server record behind
    hub = make_hub(n_gpus=1)
    hub.create_users("mallory")
    r = hub.session.post(f"{hub.api}/users/mallory/server", data=body)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert hub.server("mallory") is None
    assert gpuspawn_containers() == []
