"""The hub's notice to this container: a small JSON file in a read-only bind mount, e.g. a reclaim
warning.

    {"reclaim": {"deadline": 1764430000.5, "reason": "idle", "message": "…", "idle_since":
    1764426000.0,
                 "waiting": 2}}

The hub replaces the file atomically whenever its decision changes, so it is read fresh at every
collection (a bind-mounted directory shows the renamed file; a bind-mounted *file* would keep
showing the old inode). The file comes from another process and may be missing (old hub, CPU-only
server), half-written by a broken hub or plain garbage: every problem means "no warning", never a
failed status document.
"""

from __future__ import annotations

import math

from ..datafiles import DataFileError, parse_text, read_text

MAX_NOTICE_BYTES = 64 * 1024
MAX_TEXT = 1000  # characters of a string field; the message is a sentence or two, not a page


def _number(value) -> float | None:
    # bool is an int in Python; "deadline": true is a broken file, not 1970-01-01T00:00:01
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _count(value) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _text(value) -> str | None:
    if not isinstance(value, str):
        return None
    return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…"


def parse_reclaim(data, now: float) -> dict | None:
    """The reclaim warning in parsed notice ``data``, with only the known keys, plus
    ``seconds_left``; None when the notice has none. ValueError for a notice of the wrong shape. A
    usable deadline is required (without it there is nothing to count down to); the other keys are
    optional and become None when missing or of the wrong type, so a warning is never lost over its
    wording."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    reclaim = data.get("reclaim")
    if reclaim is None:
        return None
    if not isinstance(reclaim, dict):
        raise ValueError(f"reclaim: expected an object or null, got {type(reclaim).__name__}")
    deadline = _number(reclaim.get("deadline"))
    if deadline is None:
        raise ValueError("reclaim.deadline: expected a finite number of seconds since the epoch")
    return {
        "deadline": deadline,
        "seconds_left": max(0.0, deadline - now),
        "reason": _text(reclaim.get("reason")),
        "message": _text(reclaim.get("message")),
        "idle_since": _number(reclaim.get("idle_since")),
        "waiting": _count(reclaim.get("waiting")),
    }


def read_reclaim(path: str, now: float, log) -> dict | None:
    """The reclaim warning in the notice file at ``path`` (see parse_reclaim); None for no path, no
    file or a bad one. Never raises: this runs inside every status collection."""
    if not path:
        return None
    try:
        data = parse_text(
            read_text(path, kind="notice files", max_bytes=MAX_NOTICE_BYTES),
            as_json=True,
            kind="notice files",
        )
    except FileNotFoundError:
        return None  # the usual case: no hub notice (yet), or an older hub
    except (OSError, DataFileError) as e:
        log.debug("hub notice %s ignored: %s", path, e)
        return None
    try:
        return parse_reclaim(data, now)
    # ValueError for a bad shape; anything else would be a slip that must not cost the status
    except Exception as e:
        log.debug("hub notice %s ignored: %s", path, e)
        return None
