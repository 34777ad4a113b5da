"""What the admin page shows, built from the hub's activity file and the usage records (pure; no I/O)."""
from __future__ import annotations

from typing import List, Optional

# activity older than this is not the hub's current view: the page says so
STALE_SECONDS = 120


def duration(seconds: Optional[float]) -> str:
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


def gpu_rows(activity: dict, now: float) -> List[dict]:
    """One row per GPU, each with its holders (user, server, course, since, idle for, reclaim deadline)."""
    devices = activity.get("devices") or {}
    holders = {}
    for entry in (activity.get("servers") or {}).values():
        for uuid in entry.get("gpus") or ():
            holders.setdefault(uuid, []).append({
                "user": entry.get("user", ""), "server": entry.get("server", ""),
                "name": _name(entry.get("user", ""), entry.get("server", "")), "course": entry.get("course") or "-",
                "since": duration(now - entry["started"]) if entry.get("started") else "-",
                "idle": duration(now - entry["idle_since"]) if entry.get("idle_since") else "-",
                "deadline": (f"{entry.get('deadline_reason') or 'reclaim'} in {duration(entry['deadline'] - now)}"
                             if entry.get("deadline") else ""),
            })
    rows = []
    for uuid in sorted(set(devices) | set(holders), key=lambda u: (devices.get(u, {}).get("index", 1 << 30), u)):
        device = devices.get(uuid, {})
        util = device.get("utilization_pct")
        used, total = device.get("memory_used"), device.get("memory_total")
        rows.append({
            "uuid": uuid, "index": device.get("index", "?"), "name": device.get("name", "?"),
            "utilization": "?" if util is None else f"{util} %",
            "memory": f"{used / 2**30:.1f} / {total / 2**30:.0f} GiB" if used is not None and total else "?",
            "holders": holders.get(uuid, []),
        })
    return rows


def queue_rows(activity: dict, now: float) -> List[dict]:
    return [{
        "position": q.get("position"), "user": q.get("user", ""), "server": q.get("server", ""),
        "name": _name(q.get("user", ""), q.get("server", "")), "gpus": q.get("gpus"), "pool": q.get("pool"),
        "waiting": duration(now - q["waiting_since"]) if q.get("waiting_since") else "-",
    } for q in activity.get("queue") or ()]


def course_rows(totals: List[dict]) -> List[dict]:
    """GPU-hours per course this week, from UsageDB.totals (per user and course)."""
    courses = {}
    for row in totals:
        entry = courses.setdefault(row["course"], {"course": row["course"] or "(no course)", "hours": 0.0,
                                                   "students": 0})
        entry["hours"] += row["gpu_hours"]
        entry["students"] += 1
    return sorted(({**c, "hours": f"{c['hours']:.2f}"} for c in courses.values()),
                  key=lambda c: -float(c["hours"]))


def freshness(activity: dict, now: float) -> str:
    updated = activity.get("updated")
    if not isinstance(updated, (int, float)):
        return "The hub has not reported GPU activity yet (it does once a GPU server has run)."
    if now - updated > STALE_SECONDS:
        return f"The hub's last report is {duration(now - updated)} old: is the hub running?"
    return ""
