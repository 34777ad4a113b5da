"""What the admin page shows, built from the hub's activity file and the usage records (pure; no
I/O)."""

from __future__ import annotations

# activity older than this is not the hub's current view: the page says so
STALE_SECONDS = 120


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _name(user: str, server: str) -> str:
    return f"{user}/{server}" if server else user


def gpu_rows(activity: dict, now: float) -> list[dict]:
    """One row per GPU, each with its holders (user, server, course, since, idle for, reclaim
    deadline)."""
    devices = activity.get("devices") or {}
    holders = {}
    for entry in (activity.get("servers") or {}).values():
        for uuid in entry.get("gpus") or ():
            holders.setdefault(uuid, []).append(
                {
                    "user": entry.get("user", ""),
                    "server": entry.get("server", ""),
                    "name": _name(entry.get("user", ""), entry.get("server", "")),
                    "course": entry.get("course") or "-",
                    "since": duration(now - entry["started"]) if entry.get("started") else "-",
                    "idle": duration(now - entry["idle_since"]) if entry.get("idle_since") else "-",
                    "deadline": (
                        f"{entry.get('deadline_reason') or 'reclaim'} in "
                        f"{duration(entry['deadline'] - now)}"
                        if entry.get("deadline")
                        else ""
                    ),
                }
            )
    rows = []
    for uuid in sorted(
        set(devices) | set(holders), key=lambda u: (devices.get(u, {}).get("index", 1 << 30), u)
    ):
        device = devices.get(uuid, {})
        util = device.get("utilization_pct")
        used, total = device.get("memory_used"), device.get("memory_total")
        rows.append(
            {
                "uuid": uuid,
                "index": device.get("index", "?"),
                "name": device.get("name", "?"),
                "utilization": "?" if util is None else f"{util} %",
                "memory": f"{used / 2**30:.1f} / {total / 2**30:.0f} GiB"
                if used is not None and total
                else "?",
                "holders": holders.get(uuid, []),
            }
        )
    return rows


def queue_rows(activity: dict, now: float) -> list[dict]:
    return [
        {
            "position": q.get("position"),
            "user": q.get("user", ""),
            "server": q.get("server", ""),
            "name": _name(q.get("user", ""), q.get("server", "")),
            "gpus": q.get("gpus"),
            "pool": q.get("pool"),
            "waiting": duration(now - q["waiting_since"]) if q.get("waiting_since") else "-",
        }
        for q in activity.get("queue") or ()
    ]


def course_rows(totals: list[dict]) -> list[dict]:
    """GPU-hours per course this week, from UsageDB.totals (per user and course)."""
    courses = {}
    for row in totals:
        entry = courses.setdefault(
            row["course"], {"course": row["course"] or "(no course)", "hours": 0.0, "students": 0}
        )
        entry["hours"] += row["gpu_hours"]
        entry["students"] += 1
    return sorted(
        ({**c, "hours": f"{c['hours']:.2f}"} for c in courses.values()),
        key=lambda c: -float(c["hours"]),
    )


def freshness(activity: dict, now: float) -> str:
    updated = activity.get("updated")
    if not isinstance(updated, (int, float)):
        return "The hub has not reported GPU activity yet (it does once a GPU server has run)."
    if now - updated > STALE_SECONDS:
        return f"The hub's last report is {duration(now - updated)} old: is the hub running?"
    return ""


# ---- the instructors' course pages ---------------------------------------------------------------
def _epoch(iso: str | None) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def student_rows(course_id: str, servers: dict, activity: dict, now: float) -> list[dict]:
    """The servers running (or starting) ``course_id``, from the hub's server models (their
    user_options name the course) and what the hub last reported of their GPUs."""
    devices = activity.get("devices") or {}
    held = activity.get("servers") or {}
    rows = []
    for (user, server), model in sorted(servers.items()):
        if (model.get("user_options") or {}).get("course") != course_id:
            continue
        gpu = held.get(f"{user}/{server}") or {}
        uuids = gpu.get("gpus") or []
        started = _epoch(model.get("started")) if model.get("started") else None
        if model.get("pending"):
            state = (
                "waiting for a GPU"
                if model.get("pending") == "spawn" and not model.get("ready")
                else "starting"
            )
        elif not uuids and (model.get("user_options") or {}).get("gpus"):
            # gpu-activity.json lags a few seconds
            state = "running (its GPUs show at the hub's next report)"
        elif not uuids:
            state = "running (CPU only)"
        elif gpu.get("idle_since"):
            state = f"GPU idle for {duration(now - gpu['idle_since'])}"
        else:
            state = "GPU busy"
        rows.append(
            {
                "user": user,
                "server": server,
                "name": _name(user, server),
                "state": state,
                "gpus": [
                    f"{devices.get(u, {}).get('index', '?')}: "
                    f"{devices.get(u, {}).get('name', '?')} ({u[:12]}…)"
                    for u in uuids
                ],
                "since": duration(now - started) if started else "-",
            }
        )
    return rows


def usage_rows(totals: list[dict] | None) -> list[dict] | None:
    """This week's GPU-hours per student of one course (UsageDB.totals with course=...); None:
    unavailable."""
    if totals is None:
        return None
    return [{"user": row["user"], "hours": f"{row['gpu_hours']:.2f}"} for row in totals]


def form_values(form: dict) -> dict:
    """What the instructor typed (tornado's body arguments, decoded) as the page's form fields, to
    show it again after a refused save."""

    def one(name):
        values = form.get(name) or [""]
        return values[0]

    names = (
        "title",
        "description",
        "gpus_default",
        "gpus_max",
        "gpus_policy",
        "gpus_max_users_per_gpu",
        "gpus_queue",
        "gpus_queue_timeout_minutes",
        "gpus_weekly_hours",
        "idle_minutes",
        "idle_warn_minutes",
        "idle_reclaim",
        "mem_limit",
        "cpu_limit",
        "shm_size",
        "env",
        "mounts",
    )
    fields = {name: one(name) for name in names}
    fields["images"] = [
        (i, label)
        for i, label in zip(form.get("image") or [], form.get("image_label") or [], strict=False)
        if i
    ]
    return fields


def image_choices(allowed, data: dict, fields: dict) -> list[str]:
    """The images the form offers: the admin's list for instructors, plus those the course already
    names (an admin may have set one outside that list: it stays selectable so saving the form does
    not drop it)."""
    choices = list(allowed)
    for image in [i.get("image") for i in data.get("images") or [] if isinstance(i, dict)] + [
        i for i, _ in fields.get("images") or []
    ]:
        if isinstance(image, str) and image and image not in choices:
            choices.append(image)
    return choices


def reclaim_choices(allow_never: bool, is_admin: bool) -> list[tuple]:
    choices = [("", "hub default"), ("when_queued", "when someone waits"), ("always", "always")]
    if allow_never or is_admin:
        choices.append(("never", "never"))
    return choices


class _Device:
    """A GPU as the hub's activity file describes it; the form reads only its label ("NVIDIA A100",
    a MIG slice)."""

    def __init__(self, label: str):
        self.label = label


class _Free:
    """The free count the preview shows: the GPUs the hub last reported with no holder."""

    def __init__(self, free: int):
        self.free = free

    def free_count(self, gpus, policy=None, max_users=None):
        return self.free

    largest_request = free_count  # the preview does not tell nodes apart


def preview_card(templates, course, activity: dict) -> str:
    """The course's card in the students' spawn form template (the site's override, if any), with
    the GPUs the hub last reported."""
    from ..form import course_cards, gpu_models

    devices = activity.get("devices") or {}
    gpus = [_Device(d.get("name", "GPU")) for d in devices.values()]
    held = {u for s in (activity.get("servers") or {}).values() for u in s.get("gpus") or ()}
    free = _Free(sum(1 for uuid in devices if uuid not in held))
    if not gpus:  # the hub has not reported yet: show the course's own GPU choices
        gpus = [_Device("GPU")] * course.gpu_max
        free = _Free(len(gpus))
    cards = course_cards([course], {}, gpus, free)
    return templates.get_template("gpuspawn_form.html").render(
        cards=cards,
        simulated=False,
        gpu_total=len(gpus),
        gpu_free=free.free,
        gpu_models=gpu_models(gpus) if gpus else "",
        admin_errors=[],
        inventory_errors=[],
        notice="",
    )
