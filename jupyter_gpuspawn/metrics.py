"""Prometheus metrics of the GPUs, the queue and the reclaim, in the hub's own registry (served on
/hub/metrics).

Gauges are computed when Prometheus scrapes, from what the hub process already knows (the last GPU
inventory reading, the allocator, the queue): a scrape costs no NVML or Docker call. Counters and
the histogram are kept as things happen. Per-user labels appear only on the holder info metric, so
the others stay small.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

ServerKey = tuple[str, str]

REFUSAL_REASONS = ("no_gpu", "queue_timeout", "user_limit", "budget")
RECLAIM_REASONS = ("idle", "budget")
WAIT_OUTCOMES = ("granted", "timeout", "refused", "cancelled")
# queue waits: seconds to an hour; a class waits minutes
WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, float("inf"))


class HubView:
    """What a scrape reads: set by the spawner (callables, so a scrape sees the state of that
    moment)."""

    def __init__(
        self,
        gpus: Callable[[], Iterable],
        allocator,
        waiting: Callable[[], dict[str, int]],
        course_of: Callable[[ServerKey], str],
    ):
        self.gpus, self.allocator, self.waiting, self.course_of = (
            gpus,
            allocator,
            waiting,
            course_of,
        )


class HubMetrics:
    def __init__(self, registry=REGISTRY):
        self.refusals = Counter(
            "gpuspawn_allocation_refusals",
            "Starts that got no GPUs, by reason "
            "(no_gpu: none free and no queue; queue_timeout; user_limit; budget)",
            ["reason"],
            registry=registry,
        )
        self.reclaims = Counter(
            "gpuspawn_reclaims",
            "Servers stopped to give their GPUs back, by reason (idle, budget)",
            ["reason"],
            registry=registry,
        )
        self.queue_wait = Histogram(
            "gpuspawn_queue_wait_seconds",
            "Time starts spent in the GPU queue, by outcome (granted, timeout, refused, cancelled)",
            ["outcome"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.gpu_hours = Counter(
            "gpuspawn_gpu_hours",
            "GPU-hours charged to running servers, by course, as the usage records and budgets "
            "charge them (a seat on a GPU shared by up to n counts 1/n, however many share it)",
            ["course"],
            registry=registry,
        )
        self.view: HubView | None = None
        # every known label value from the start: increase() sees the first event too
        for reason in REFUSAL_REASONS:
            self.refusals.labels(reason)
        for reason in RECLAIM_REASONS:
            self.reclaims.labels(reason)
        for outcome in WAIT_OUTCOMES:
            self.queue_wait.labels(outcome)
        registry.register(self)

    def describe(self):
        return []  # registering must not call collect(): the view is set later

    def collect(self):
        view = self.view
        if view is None:
            return
        allocator = view.allocator
        gpus = view.gpus()
        if gpus is None:  # the inventory was never read yet: no figures rather than "0 GPUs free"
            yield from self._queue(view)
            return
        states = GaugeMetricFamily(
            "gpuspawn_gpus",
            "GPUs of this host by state: free, held (by a server of "
            "this hub), busy_outside (used by something the hub did not start)",
            labels=["state"],
        )
        counts = {"free": 0, "held": 0, "busy_outside": 0}
        holders = InfoMetricFamily(
            "gpuspawn_gpu_holder",
            "Which server holds which GPU",
            labels=["gpu_uuid", "user", "server", "course"],
        )
        for gpu in gpus:
            keys = allocator.holders_of(gpu.uuid)
            if keys:
                counts["held"] += 1
                for user, server in keys:
                    holders.add_metric([gpu.uuid, user, server, view.course_of((user, server))], {})
            elif allocator.busy_outside_hub(gpu):
                counts["busy_outside"] += 1
            else:
                counts["free"] += 1
        for state, n in counts.items():
            states.add_metric([state], n)
        yield states
        yield holders
        yield from self._queue(view)

    @staticmethod
    def _queue(view: HubView):
        queue = GaugeMetricFamily(
            "gpuspawn_queue_length", "Starts waiting for GPUs, by pool", labels=["pool"]
        )
        for pool, n in sorted(view.waiting().items()):
            queue.add_metric([pool], n)
        yield queue


_per_registry: dict[int, HubMetrics] = {}


def hub_metrics(registry=REGISTRY) -> HubMetrics:
    """The one HubMetrics of ``registry``: a second spawner class, or the spawner module imported
    again, must not register the same metrics twice (prometheus_client refuses, and the hub would
    not start)."""
    if id(registry) not in _per_registry:
        _per_registry[id(registry)] = HubMetrics(registry)
    return _per_registry[id(registry)]
