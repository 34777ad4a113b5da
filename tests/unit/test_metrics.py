"""The hub's GPU metrics, rendered by prometheus_client from a real allocator and queue (own
registry per test)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jupyter_gpuspawn.allocation import GPUAllocator, GPURequest
from jupyter_gpuspawn.gpus import GPU
from jupyter_gpuspawn.metrics import HubMetrics, HubView
from jupyter_gpuspawn.queue import GPUQueue

GiB = 1024**3


def samples(registry) -> dict:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_gpus_by_state_holders_and_queue_are_read_at_scrape_time():
    registry = CollectorRegistry()
    metrics = HubMetrics(registry)
    allocator = GPUAllocator()
    gpus = [GPU(f"GPU-{i}", i, "A100", 80 * GiB) for i in range(3)]
    # someone else's job
    gpus.append(GPU("GPU-x", 3, "A100", 80 * GiB, memory_used=20 * GiB, process_count=1))
    queue = GPUQueue()
    courses = {("ann", ""): "dl", ("bob", "big"): "cv"}
    metrics.view = HubView(
        gpus=lambda: gpus,
        allocator=allocator,
        waiting=lambda: {"gpu": len(queue)},
        course_of=lambda key: courses.get(key, ""),
    )
    assert samples(registry)[("gpuspawn_gpus", (("state", "free"),))] == 3  # nothing held yet

    allocator.allocate(GPURequest("ann", "", 1), gpus)
    allocator.allocate(GPURequest("bob", "big", 1), gpus)
    queue.join(GPURequest("cat", "", 2), pool="gpu", holds_other=False, now=0)
    got = samples(registry)
    assert got[("gpuspawn_gpus", (("state", "held"),))] == 2
    assert got[("gpuspawn_gpus", (("state", "free"),))] == 1
    assert got[("gpuspawn_gpus", (("state", "busy_outside"),))] == 1
    assert got[("gpuspawn_queue_length", (("pool", "gpu"),))] == 1
    holders = {
        dict(labels)["user"]: dict(labels)
        for (name, labels) in got
        if name == "gpuspawn_gpu_holder_info"
    }
    assert holders["ann"]["course"] == "dl" and holders["bob"]["server"] == "big"
    assert holders["ann"]["gpu_uuid"] == allocator.assignment("ann")[0]
    assert set(holders) == {"ann", "bob"}

    allocator.release("ann")
    got = samples(registry)
    assert got[("gpuspawn_gpus", (("state", "held"),))] == 1
    assert [
        dict(labels)["user"] for (name, labels) in got if name == "gpuspawn_gpu_holder_info"
    ] == ["bob"]


def test_counters_and_the_wait_histogram_follow_prometheus_naming():
    registry = CollectorRegistry()
    metrics = HubMetrics(registry)
    metrics.refusals.labels("user_limit").inc()
    metrics.reclaims.labels("idle").inc(2)
    metrics.queue_wait.labels("granted").observe(42)
    metrics.gpu_hours.labels("dl").inc(0.5)
    got = samples(registry)
    assert got[("gpuspawn_allocation_refusals_total", (("reason", "user_limit"),))] == 1
    assert got[("gpuspawn_reclaims_total", (("reason", "idle"),))] == 2
    assert got[("gpuspawn_queue_wait_seconds_count", (("outcome", "granted"),))] == 1
    assert (
        got[("gpuspawn_queue_wait_seconds_bucket", (("le", "60.0"), ("outcome", "granted")))] == 1
    )
    assert (
        got[("gpuspawn_queue_wait_seconds_bucket", (("le", "30.0"), ("outcome", "granted")))] == 0
    )
    assert got[("gpuspawn_gpu_hours_total", (("course", "dl"),))] == 0.5
    # without a view (before the first spawner ran) a scrape still works
    assert ("gpuspawn_gpus", (("state", "free"),)) not in got


def test_before_the_first_inventory_reading_no_gpu_figures_are_made_up():
    registry = CollectorRegistry()
    metrics = HubMetrics(registry)
    metrics.view = HubView(
        gpus=lambda: None,
        allocator=GPUAllocator(),
        waiting=lambda: {"gpu": 0},
        course_of=lambda key: "",
    )
    got = samples(registry)
    assert not any(name == "gpuspawn_gpus" for name, _ in got)  # not "0 of 0 free": unknown
    assert got[("gpuspawn_queue_length", (("pool", "gpu"),))] == 0
    # every reason exists from the start, at 0, so the first event shows in increase()
    assert got[("gpuspawn_allocation_refusals_total", (("reason", "budget"),))] == 0
    assert got[("gpuspawn_reclaims_total", (("reason", "idle"),))] == 0


def test_one_set_of_metrics_per_registry_however_often_it_is_asked_for():
    from jupyter_gpuspawn.metrics import hub_metrics

    registry = CollectorRegistry()
    assert hub_metrics(registry) is hub_metrics(registry)  # a second registration would raise
