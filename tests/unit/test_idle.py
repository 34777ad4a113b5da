"""Idle-GPU decisions (idle.py): real IdleTracker, samples made of real gpus.GPU objects, times
given explicitly."""

from __future__ import annotations

from jupyter_gpuspawn.gpus import GPU
from jupyter_gpuspawn.idle import Holder, IdlePolicy, IdleTracker

MIN = 60.0
# 10 minutes idle, warned 2 minutes before: at risk from 8 minutes of idleness on
POLICY = IdlePolicy(minutes=10, warn_minutes=2, reclaim="always")
QUEUED = IdlePolicy(minutes=10, warn_minutes=2, reclaim="when_queued")


def gpu(uuid, util=0, index=0):
    return GPU(uuid, index, "A100", 80 * 1024**3, utilization_pct=util)


def holder(user, gpus=("GPU-a",), started=0.0, policy=POLICY, frees=0.0):
    return Holder(key=(user, ""), gpus=tuple(gpus), started=started, policy=policy, frees=frees)


def keys(notices):
    return [n.key[0] for n in notices]


def sample(tracker, utils, now, held=None):
    """One sample of ``utils`` (uuid -> utilisation or None) at ``now``; ``held`` defaults to every
    sampled GPU."""
    tracker.observe(
        [gpu(u, util) for u, util in utils.items()], held if held is not None else list(utils), now
    )


def run(tracker, holders, times, utils=None, demand=0.0, waiting=0):
    """Sample (idle unless ``utils`` says otherwise) and review at each of ``times``; the last
    review."""
    review = None
    for now in times:
        sample(tracker, utils or {u: 0 for h in holders for u in h.gpus}, now)
        review = tracker.review(holders, now, demand, waiting)
    return review


# ---- idle time -----------------------------------------------------------------------------------
def test_a_gpu_idle_for_the_whole_period_makes_its_server_due_then_and_not_before():
    tracker = IdleTracker(5.0, started=0)
    a = holder("a")
    review = run(tracker, [a], [0, 60, 7 * MIN, 8 * MIN, 9 * MIN, 10 * MIN - 1])
    assert keys(review.warned) == ["a"] and review.due == []
    assert review.warned[0].deadline == 10 * MIN and review.warned[0].idle_since == 0
    review = run(tracker, [a], [10 * MIN])
    assert keys(review.due) == ["a"] and review.warned == []
    assert review.due[0].gpus == ("GPU-a",)


def test_the_threshold_is_strict_under_and_every_gpu_of_the_server_must_be_idle():
    tracker = IdleTracker(5.0, started=0)
    a = holder("a", gpus=("GPU-a", "GPU-b"))
    sample(tracker, {"GPU-a": 4, "GPU-b": 4}, 0)
    sample(tracker, {"GPU-a": 4, "GPU-b": 5}, 3 * MIN)  # 5 % is not "under 5 %"
    review = tracker.review([a], 10 * MIN, 0)
    assert review.due == [] and review.warned == []
    assert tracker.idle_since(a) == 3 * MIN
    review = run(tracker, [a], [11 * MIN, 13 * MIN], utils={"GPU-a": 4.9, "GPU-b": 0})
    assert keys(review.due) == ["a"]


def test_one_busy_sample_resets_the_idle_time():
    tracker = IdleTracker(5.0, started=0)
    a = holder("a")
    assert keys(run(tracker, [a], [0, 9 * MIN]).warned) == ["a"]
    sample(tracker, {"GPU-a": 80}, 9 * MIN + 30)  # one busy sample in between idle ones
    review = run(tracker, [a], [10 * MIN, 15 * MIN])
    assert review.due == [] and review.warned == []  # withdrawn, and 5.5 idle minutes are not 8
    assert tracker.idle_since(a) == 9 * MIN + 30
    assert keys(run(tracker, [a], [17 * MIN + 30, 19 * MIN + 30]).due) == ["a"]


def test_unknown_utilisation_counts_as_busy():
    tracker = IdleTracker(5.0, started=0)
    a = holder("a")
    # MIG: NVML has no figure
    review = run(tracker, [a], [0, 5 * MIN, 20 * MIN], utils={"GPU-a": None})
    assert review.due == [] and review.warned == []
    assert tracker.idle_since(a) == 20 * MIN


def test_a_held_gpu_missing_from_the_sample_counts_as_busy():
    tracker = IdleTracker(5.0, started=0)
    a = holder("a", gpus=("GPU-a", "GPU-b"))
    for now in (0, 5 * MIN, 20 * MIN):
        # GPU-b fell off the bus: NVML no longer lists it, the held list still has it
        tracker.observe([gpu("GPU-a", 0)], ["GPU-a", "GPU-b"], now)
        review = tracker.review([a], now, 0)
    assert review.due == [] and review.warned == []
    assert tracker.idle_since(a) == 20 * MIN


def test_gpus_never_sampled_count_as_busy_when_the_tracker_started():
    tracker = IdleTracker(5.0, started=1000.0)  # the hub process started at 1000
    a = holder("a", started=0.0)
    assert tracker.idle_since(a) == 1000.0
    assert tracker.review([a], 1000 + 8 * MIN - 1, 0).warned == []


def test_idle_time_never_counts_from_before_the_server_started():
    tracker = IdleTracker(5.0, started=0)
    # the GPU has been idle since 0, free or held by a server now gone
    sample(tracker, {"GPU-a": 0}, 0)
    b = holder("b", started=30 * MIN)  # a new server got it at 30 minutes
    review = run(tracker, [b], [30 * MIN, 37 * MIN])
    assert review.warned == [] and review.due == []
    assert tracker.idle_since(b) == 30 * MIN
    assert keys(run(tracker, [b], [38 * MIN]).warned) == ["b"]


# ---- the warning ---------------------------------------------------------------------------------
def test_the_warning_starts_warn_minutes_before_the_deadline():
    tracker = IdleTracker(5.0, started=0)
    a = holder("a")
    assert run(tracker, [a], [0, 8 * MIN - 1]).warned == []
    review = run(tracker, [a], [8 * MIN])
    assert keys(review.warned) == ["a"] and review.warned[0].deadline == 10 * MIN


def test_a_server_idle_for_hours_when_the_queue_forms_still_gets_its_full_warning():
    tracker = IdleTracker(5.0, started=0)
    a = holder("a", policy=QUEUED)
    review = run(tracker, [a], [0, 60 * MIN, 180 * MIN])  # nobody waits: nothing happens
    assert review.warned == [] and review.due == []
    review = run(tracker, [a], [180 * MIN], demand=1, waiting=1)
    assert keys(review.warned) == ["a"]
    notice = review.warned[0]
    assert notice.deadline == 182 * MIN and notice.idle_since == 0 and notice.waiting == 1
    assert run(tracker, [a], [182 * MIN - 1], demand=1, waiting=1).due == []
    assert keys(run(tracker, [a], [182 * MIN], demand=1, waiting=1).due) == ["a"]


def test_a_warning_is_withdrawn_when_the_queue_empties_and_a_new_one_starts_from_scratch():
    tracker = IdleTracker(5.0, started=0)
    a = holder("a", policy=QUEUED)
    assert keys(run(tracker, [a], [0, 60 * MIN], demand=1, waiting=1).warned) == ["a"]
    review = run(tracker, [a], [61 * MIN], demand=0, waiting=0)
    assert review.warned == [] and review.due == []
    # the queue forms again past the old deadline: a fresh, full warning, not an immediate stop
    review = run(tracker, [a], [63 * MIN], demand=1, waiting=1)
    assert (
        review.due == [] and keys(review.warned) == ["a"] and review.warned[0].deadline == 65 * MIN
    )


def test_a_warning_is_withdrawn_when_the_gpu_gets_busy():
    tracker = IdleTracker(5.0, started=0)
    a = holder("a", policy=QUEUED)
    assert keys(run(tracker, [a], [0, 60 * MIN], demand=1, waiting=1).warned) == ["a"]
    review = run(tracker, [a], [61 * MIN], utils={"GPU-a": 90}, demand=1, waiting=1)
    assert review.warned == [] and review.due == []
    # idle again, but only for 4 minutes
    review = run(tracker, [a], [62 * MIN, 65 * MIN], demand=1, waiting=1)
    assert review.warned == [] and review.due == []


def test_with_demand_for_one_gpu_only_the_longest_idle_of_three_is_warned():
    tracker = IdleTracker(5.0, started=0)
    b, a, c = (
        holder(u, gpus=(f"GPU-{u}",), started=s, policy=QUEUED)
        for u, s in (("b", 20 * MIN), ("a", 10 * MIN), ("c", 30 * MIN))
    )
    review = run(tracker, [b, a, c], [0, 60 * MIN], demand=1, waiting=1)
    assert keys(review.warned) == ["a"] and review.due == []
    review = run(tracker, [b, a, c], [62 * MIN], demand=1, waiting=1)
    assert keys(review.due) == ["a"] and review.warned == []
    # more demand: the next longest-idle joins, in order
    review = run(tracker, [b, a, c], [62 * MIN], demand=2, waiting=2)
    assert keys(review.due) == ["a"] and keys(review.warned) == ["b"]


def test_a_multi_gpu_server_covers_that_many_gpus_of_demand():
    tracker = IdleTracker(5.0, started=0)
    big = holder("big", gpus=("GPU-1", "GPU-2"), started=0, policy=QUEUED)
    small = holder("small", gpus=("GPU-3",), started=MIN, policy=QUEUED)
    review = run(tracker, [big, small], [0, 60 * MIN], demand=2, waiting=1)
    assert keys(review.warned) == ["big"]
    review = run(tracker, [big, small], [60 * MIN], demand=2.5, waiting=2)
    assert keys(review.warned) == ["big", "small"]


def test_always_reclaims_without_demand_and_counts_toward_it():
    tracker = IdleTracker(5.0, started=0)
    always = holder("always", gpus=("GPU-1",), started=5 * MIN, policy=POLICY)
    queued = holder("queued", gpus=("GPU-2",), started=0, policy=QUEUED)  # idle for longer
    review = run(tracker, [always, queued], [0, 60 * MIN], demand=0)
    assert keys(review.warned) == ["always"]
    # one GPU wanted: the server stopped anyway covers it, the when_queued one is left alone
    review = run(tracker, [always, queued], [62 * MIN], demand=1, waiting=1)
    assert keys(review.due) == ["always"] and review.warned == []
    review = run(tracker, [always, queued], [62 * MIN], demand=2, waiting=2)
    assert keys(review.due) == ["always"] and keys(review.warned) == ["queued"]


def test_never_is_never_reclaimed():
    tracker = IdleTracker(5.0, started=0)
    never = holder("never", policy=IdlePolicy(minutes=10, warn_minutes=2, reclaim="never"))
    review = run(tracker, [never], [0, 60 * MIN, 600 * MIN], demand=5, waiting=5)
    assert review.warned == [] and review.due == []


def test_a_server_without_gpus_is_never_reclaimed():
    tracker = IdleTracker(5.0, started=0)
    review = run(tracker, [holder("cpu", gpus=())], [0, 600 * MIN], demand=1, waiting=1)
    assert review.warned == [] and review.due == []


def test_warn_minutes_longer_than_minutes_is_clamped():
    policy = IdlePolicy(minutes=1, warn_minutes=5, reclaim="always")
    assert policy.warn_seconds == 60 and policy.seconds == 60
    tracker = IdleTracker(5.0, started=0)
    a = holder("a", policy=policy)
    review = run(tracker, [a], [0])
    # not 5 minutes after the warning
    assert keys(review.warned) == ["a"] and review.warned[0].deadline == 60
    assert keys(run(tracker, [a], [60]).due) == ["a"]


def test_fractional_minutes_work_for_short_test_timings():
    policy = IdlePolicy(minutes=0.1, warn_minutes=0.05, reclaim="always")  # 6 s, warned 3 s ahead
    tracker = IdleTracker(5.0, started=0)
    a = holder("a", policy=policy)
    assert run(tracker, [a], [0, 2.9]).warned == []
    assert run(tracker, [a], [3]).warned[0].deadline == 6
    assert keys(run(tracker, [a], [6]).due) == ["a"]


def test_a_shared_seat_frees_a_fraction_of_a_gpu():
    tracker = IdleTracker(5.0, started=0)
    seats = [
        holder(u, gpus=(f"GPU-{u}",), started=i * MIN, policy=QUEUED, frees=0.5)
        for i, u in enumerate("abc")
    ]
    review = run(tracker, seats, [0, 60 * MIN], demand=1, waiting=1)
    assert keys(review.warned) == ["a", "b"]  # two half seats for one GPU; the third is left alone
    assert seats[0].gpus_freed == 0.5 and holder("x", gpus=("G1", "G2")).gpus_freed == 2.0


def test_forget_drops_the_warning_of_a_server_that_stopped():
    tracker = IdleTracker(5.0, started=0)
    a = holder("a")
    assert keys(run(tracker, [a], [0, 9 * MIN]).warned) == ["a"]
    tracker.forget([("a", "")])
    assert tracker.warned_at == {}
    # a new server of the same name, first reviewed long after it went idle: the old warning must
    # not make it due at once, it gets a warning of its own
    fresh = holder("a", started=20 * MIN)
    review = run(tracker, [fresh], [40 * MIN])
    assert (
        review.due == [] and keys(review.warned) == ["a"] and review.warned[0].deadline == 42 * MIN
    )


def test_a_warned_server_keeps_its_turn_when_a_longer_idle_one_shows_up():
    # a's course warns after 8 idle minutes; c's course only after 18, but c has been idle longer
    tracker = IdleTracker(5.0, started=0)
    a = holder("a", gpus=("GPU-a",), started=0, policy=QUEUED)
    c = holder(
        "c",
        gpus=("GPU-c",),
        started=0,
        policy=IdlePolicy(minutes=20, warn_minutes=2, reclaim="when_queued"),
    )
    sample(tracker, {"GPU-a": 90, "GPU-c": 0}, 1 * MIN)
    sample(tracker, {"GPU-a": 0, "GPU-c": 0}, 2 * MIN)
    review = tracker.review([a, c], 10 * MIN, demand=1, waiting=1)
    assert keys(review.warned) == ["a"]
    deadline = review.warned[0].deadline
    sample(tracker, {"GPU-a": 0, "GPU-c": 0}, 19 * MIN)
    # c is now at risk too, and idle longer
    review = tracker.review([a, c], 19 * MIN, demand=1, waiting=1)
    assert keys(review.due) == ["a"] and review.warned == [] and review.due[0].deadline == deadline


def test_nobody_is_warned_when_even_every_idle_gpu_would_not_let_the_first_in_line_start():
    tracker = IdleTracker(5.0, started=0)
    a = holder("a", policy=QUEUED)
    # the head wants 4 GPUs and lacks 3; one idle GPU would only sit reserved for it
    review = run(tracker, [a], [0, 9 * MIN], demand=3, waiting=1)
    assert tracker.review([a], 9 * MIN, demand=3, waiting=1, head_need=3).warned == []
    # the head lacks 1: the idle GPU lets it start
    assert keys(tracker.review([a], 9 * MIN, demand=3, waiting=1, head_need=1).warned) == ["a"]
    assert keys(review.warned) == ["a"]  # without head_need (0), demand alone decides


def test_a_clock_stepping_back_does_not_block_reclaim():
    tracker = IdleTracker(5.0, started=0)
    a = holder("a")
    sample(tracker, {"GPU-a": 90}, 60 * MIN)  # a sample taken while the clock ran an hour ahead
    review = run(tracker, [a], [1 * MIN, 9 * MIN])  # the clock is set right; idle since then
    assert keys(review.warned) == ["a"]
