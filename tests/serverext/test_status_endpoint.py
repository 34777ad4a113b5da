"""GET {base_url}gpuspawn/status against a real jupyter_server."""

from __future__ import annotations

import json

import pytest
from tornado.httpclient import HTTPClientError

from .conftest import GPU_A, GPU_B


async def get_status(jp_fetch):
    r = await jp_fetch("gpuspawn", "status")
    assert r.code == 200
    return json.loads(r.body), r.body.decode()


async def test_cgroup_v2_container_figures(jp_fetch):
    status, _ = await get_status(jp_fetch)
    c = status["container"]
    assert c["cgroup_version"] == 2
    assert (c["memory_limit"], c["memory_used"]) == (2 * 1024**3, 1024**3)
    assert c["cpu_limit"] == 1.5 and (c["pids"], c["pids_limit"]) == (12, 4096)
    assert c["image"] == "local/pytorch-hub:24.08" and c["course"] == "dl101"
    assert c["container_id"] == "1" * 12
    assert 599 < c["uptime_seconds"] < 601
    assert c["shm_size"] is None or c["shm_size"] > 0


@pytest.mark.parametrize("cgroup_kind", ["v1"])
async def test_cgroup_v1_container_figures(jp_fetch):
    status, _ = await get_status(jp_fetch)
    c = status["container"]
    assert c["cgroup_version"] == 1
    assert c["memory_limit"] == 4 * 1024**3
    assert c["memory_used"] == 2 * 1024**3  # usage minus inactive page cache
    assert c["cpu_limit"] == 2.0 and c["pids"] == 7 and c["pids_limit"] is None


async def test_only_the_assigned_gpu_and_only_our_processes(jp_fetch):
    status, body = await get_status(jp_fetch)
    [gpu] = status["gpus"]
    assert gpu["uuid"] == GPU_A and gpu["index"] == 2 and gpu["simulated"] is True
    assert (
        gpu["utilization_pct"] == 37
        and gpu["memory_used"] == 12 * 1024**3
        and gpu["temperature_c"] == 55
    )
    assert gpu["processes"] == [{"pid": 101, "used_memory": 10 * 1024**3, "command": "python"}]
    assert gpu["other_processes"] == 2
    assert (
        GPU_B not in body
        and "someone-else" not in body
        and "202" not in json.dumps(gpu["processes"])
    )
    assert status["errors"] == []


@pytest.mark.parametrize(
    "gpu_env", [{"JUPYTER_GPUSPAWN_GPUS": "", "NVIDIA_VISIBLE_DEVICES": "void"}]
)
async def test_cpu_only_server_has_no_gpus(jp_fetch):
    status, body = await get_status(jp_fetch)
    assert status["gpus"] == [] and GPU_A not in body and GPU_B not in body


@pytest.mark.parametrize("gpu_source", ["nvml"])
async def test_no_driver_still_lists_assigned_uuids_and_explains(jp_fetch):
    status, _ = await get_status(jp_fetch)
    [gpu] = status["gpus"]
    assert gpu["uuid"] == GPU_A and gpu["utilization_pct"] is None and gpu["memory_total"] is None
    assert len(status["errors"]) == 1
    assert "GPU metrics are unavailable" in status["errors"][0] and GPU_A in status["errors"][0]
    assert "Traceback" not in status["errors"][0]


async def test_forbidden_without_a_token(jp_fetch):
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("gpuspawn", "status", headers={"Authorization": ""})
    assert e.value.code == 403


def routes(router):
    """(pattern, handler class, kwargs) of every rule under a tornado router (host rules hold nested
    routers)."""
    for rule in router.rules:
        if hasattr(rule.target, "rules"):
            yield from routes(rule.target)
        else:
            yield getattr(rule.matcher, "regex", None), rule.target, rule.target_kwargs


async def test_the_extension_registers_its_status_route(jp_serverapp, jp_base_url):
    from jupyter_gpuspawn.status.collector import StatusCollector
    from jupyter_gpuspawn.status.handlers import StatusHandler

    ours = [
        (regex.pattern, kwargs)
        for regex, target, kwargs in routes(jp_serverapp.web_app.default_router)
        if target is StatusHandler
    ]
    assert len(ours) == 1
    pattern, kwargs = ours[0]
    assert pattern == f"{jp_base_url}gpuspawn/status$"
    assert isinstance(kwargs["collector"], StatusCollector)
    assert jp_serverapp.extension_manager.extensions["jupyter_gpuspawn"].enabled


async def test_one_collection_is_shared_by_concurrent_requests(jp_fetch):
    import asyncio

    bodies = await asyncio.gather(*(jp_fetch("gpuspawn", "status") for _ in range(10)))
    stamps = {json.loads(b.body)["collected_at"] for b in bodies}
    assert len(stamps) == 1


async def test_polling_the_status_is_not_user_activity(jp_fetch, jp_serverapp):
    """The Lab status bar polls every 2 s: an open tab must not keep an idle server from the
    culler."""
    import datetime

    settings = jp_serverapp.web_app.settings
    long_ago = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    settings["api_last_activity"] = long_ago
    # what jupyterhub-singleuser reports to the hub (here: the server's start)
    before = jp_serverapp.web_app.last_activity()
    await get_status(jp_fetch)
    assert settings["api_last_activity"] == long_ago
    assert jp_serverapp.web_app.last_activity() == before
    # another authenticated API call does count: the check above can see activity move
    await jp_fetch("api", "contents")
    assert settings["api_last_activity"] > long_ago
