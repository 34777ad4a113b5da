"""The hub's reclaim warning (a notice file it replaces atomically) in GET
{base_url}gpuspawn/status."""

from __future__ import annotations

import json
import os
import time

import pytest

from .conftest import GPU_A

MESSAGE = (
    "Your GPU has been idle (under 5 % utilisation) for 52 minutes while 2 students wait for one. "
    "This server "
    "will be stopped so they can use it; your home directory is kept."
)


def notice(deadline, **fields):
    """The contract's example notice with ``deadline``; ``fields`` add or override keys of
    ``reclaim``."""
    reclaim = {
        "deadline": deadline,
        "reason": "idle",
        "message": MESSAGE,
        "idle_since": 1764426000.0,
        "waiting": 2,
    }
    return {"reclaim": {**reclaim, **fields}}


def replace(path, content):
    """Write ``content`` (text, or JSON for anything else) the way the hub does: a temporary file,
    then a rename."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    if not isinstance(content, (str, bytes)):
        content = json.dumps(content)
    with open(tmp, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)
    os.replace(tmp, path)


@pytest.fixture
def notice_path(tmp_path):
    return str(tmp_path / "notices" / "notice.json")


@pytest.fixture
def notice_by():
    """How the server learns the path: "env" (what the spawner sets), "config" (c.StatusCollector),
    or "none"."""
    return "env"


@pytest.fixture
def gpu_env(notice_path, notice_by):
    env = {"JUPYTER_GPUSPAWN_GPUS": GPU_A, "NVIDIA_VISIBLE_DEVICES": GPU_A}
    if notice_by == "env":
        env["JUPYTER_GPUSPAWN_NOTICE_FILE"] = notice_path
    return env


@pytest.fixture
def jp_server_config(jp_server_config, notice_path, notice_by):
    # cache_seconds 0: every request collects afresh, so a replaced notice must show on the very
    # next request
    jp_server_config["StatusCollector"]["cache_seconds"] = 0
    if notice_by == "config":
        jp_server_config["StatusCollector"]["notice_file"] = notice_path
    return jp_server_config


async def get_status(jp_fetch):
    r = await jp_fetch("gpuspawn", "status")
    assert r.code == 200
    return json.loads(r.body)


def assert_rest_intact(status):
    assert (
        status["container"]["image"] == "local/pytorch-hub:24.08"
        and status["container"]["cgroup_version"] == 2
    )
    assert [gpu["uuid"] for gpu in status["gpus"]] == [GPU_A] and status["gpus"][0][
        "utilization_pct"
    ] == 37
    assert status["errors"] == []


@pytest.mark.parametrize("notice_by", ["env", "config"])
async def test_the_status_carries_the_reclaim_deadline_and_seconds_left(jp_fetch, notice_path):
    deadline = time.time() + 480.5
    replace(notice_path, notice(deadline, secret="not for the browser", extra={"x": 1}))
    before = time.time()
    status = await get_status(jp_fetch)
    after = time.time()
    reclaim = status["reclaim"]
    assert set(reclaim) == {
        "deadline",
        "seconds_left",
        "reason",
        "message",
        "idle_since",
        "waiting",
    }
    assert reclaim["deadline"] == deadline and reclaim["idle_since"] == 1764426000.0
    assert (reclaim["reason"], reclaim["message"], reclaim["waiting"]) == ("idle", MESSAGE, 2)
    assert deadline - after <= reclaim["seconds_left"] <= deadline - before
    assert_rest_intact(status)


async def test_a_replaced_notice_shows_at_the_next_collection(jp_fetch, notice_path):
    first = time.time() + 600
    replace(notice_path, notice(first))
    assert (await get_status(jp_fetch))["reclaim"]["deadline"] == first
    second = time.time() + 120  # the hub moved the deadline
    replace(notice_path, notice(second, reason="budget"))
    status = await get_status(jp_fetch)
    assert status["reclaim"]["deadline"] == second and status["reclaim"]["reason"] == "budget"
    replace(notice_path, notice(time.time() - 5))  # past the deadline, the hub has not acted yet
    assert (await get_status(jp_fetch))["reclaim"]["seconds_left"] == 0
    replace(notice_path, {"reclaim": None})  # the student started training: warning withdrawn
    assert (await get_status(jp_fetch))["reclaim"] is None
    replace(notice_path, notice(second))
    assert (await get_status(jp_fetch))["reclaim"]["deadline"] == second
    replace(notice_path, {})  # what the hub writes for "no warning"
    assert (await get_status(jp_fetch))["reclaim"] is None
    replace(notice_path, notice(second))
    assert (await get_status(jp_fetch))["reclaim"]["deadline"] == second
    os.remove(notice_path)
    status = await get_status(jp_fetch)
    assert status["reclaim"] is None
    assert_rest_intact(status)


BAD_NOTICES = {
    "missing": None,
    "garbage": '{"reclaim": {"deadline": 17644',
    "not-utf8": b'\xff\xfe{"reclaim": {}}',
    "oversized": notice(time.time() + 600, padding="x" * (64 * 1024)),
    "nested-too-deeply": '{"reclaim": ' + "[" * 30000 + "]" * 30000 + "}",
    "a-list": [notice(time.time() + 600)],
    "reclaim-a-string": {"reclaim": "in 8 minutes"},
    "deadline-a-string": notice("2025-11-29T14:32:00"),
    "deadline-a-bool": {"reclaim": {"deadline": True, "message": MESSAGE}},
    "deadline-nan": '{"reclaim": {"deadline": NaN, "message": "x"}}',
    "deadline-infinite": '{"reclaim": {"deadline": Infinity, "message": "x"}}',
    "no-deadline": {"reclaim": {"reason": "idle", "message": MESSAGE}},
    "a-directory": "DIRECTORY",
}


@pytest.mark.parametrize("kind", list(BAD_NOTICES))
async def test_a_bad_notice_means_no_warning_and_the_rest_of_the_status_intact(
    jp_fetch, notice_path, kind
):
    content = BAD_NOTICES[kind]
    if content == "DIRECTORY":
        os.makedirs(notice_path)
    elif content is not None:
        replace(notice_path, content)
    status = await get_status(jp_fetch)
    assert status["reclaim"] is None
    assert_rest_intact(status)


async def test_wrong_typed_details_are_dropped_but_the_warning_stays(jp_fetch, notice_path):
    deadline = time.time() + 300
    replace(
        notice_path,
        {
            "reclaim": {
                "deadline": int(deadline),
                "reason": ["idle"],
                "message": "m" * 5000,
                "idle_since": "an hour ago",
                "waiting": -1,
            }
        },
    )
    reclaim = (await get_status(jp_fetch))["reclaim"]
    assert reclaim["deadline"] == int(deadline) and 0 < reclaim["seconds_left"] <= 300
    assert (
        reclaim["reason"] is None and reclaim["idle_since"] is None and reclaim["waiting"] is None
    )
    assert len(reclaim["message"]) == 1000 and reclaim["message"].startswith("mmm")
    replace(notice_path, notice(deadline, waiting=True, idle_since=float("nan")))
    reclaim = (await get_status(jp_fetch))["reclaim"]
    assert (
        reclaim["waiting"] is None
        and reclaim["idle_since"] is None
        and reclaim["message"] == MESSAGE
    )


@pytest.mark.parametrize("notice_by", ["none"])
async def test_no_notice_file_configured_means_no_warning(jp_fetch, notice_path):
    # present, but this server was not told about it
    replace(notice_path, notice(time.time() + 600))
    status = await get_status(jp_fetch)
    assert status["reclaim"] is None
    assert_rest_intact(status)
