"""Validation of ``user_options``: one path for the spawn form and the REST API.

Allowed keys: ``course`` (course id), ``image`` (an image key within the course, never a raw image
name unless the admin allows any image), ``gpus`` (int). Anything else is refused with a message a
student understands; nothing is passed through to Docker.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ALLOWED_KEYS = ("course", "image", "gpus")
MAX_KEY_LENGTH = 128
# A docker image reference (registry/name:tag@digest); only consulted when the admin allows any
# image ("*").
IMAGE_REF_RE = re.compile(r"[a-z0-9]+(?:[._/:-][a-zA-Z0-9]+)*(?:@sha256:[0-9a-f]{64})?")
# A GPU count typed in the form: one to four ASCII digits ([0-9], not \d, which matches any Unicode
# digit).
ASCII_COUNT_RE = re.compile(r"[0-9]{1,4}")


class OptionsError(ValueError):
    """A user_options problem; ``str(e)`` is the message for the student, ``status`` the HTTP
    status."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SpawnChoice:
    course: object  # courses.Course (the implicit one on hubs without course files)
    image_key: str  # key within the course ("" = the hub's default image)
    image: str  # the docker image to run
    gpus: int


def shorten(value, limit=40) -> str:
    """A user-supplied value fit to quote back in an error message. The work is bounded too: a plain
    repr() of a value parsed from a hostile file (a list of a million items, a 200 KB string) would
    take long and say nothing."""
    if isinstance(value, str):
        text = repr(value[:limit])
    else:
        bounded = reprlib.Repr()
        bounded.maxlevel, bounded.maxstring, bounded.maxother = 3, limit, limit
        bounded.maxlist = bounded.maxtuple = bounded.maxdict = bounded.maxset = 6
        text = bounded.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_gpu_count(value, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        if maximum == 0:
            raise OptionsError(
                f"No GPUs can be requested here; ask for 0 GPUs (got {shorten(value)})."
            )
        raise OptionsError(
            f"gpus must be a whole number from 0 to {maximum}, got {shorten(value)}."
        )
    return value


def _choose_course(requested, visible: Sequence, known_ids) -> object:
    if requested in ("", None):
        if not visible:
            raise OptionsError(
                "No course environment is open to you. Ask your instructor to add you.", 403
            )
        return visible[0]
    if not isinstance(requested, str) or len(requested) > MAX_KEY_LENGTH:
        raise OptionsError(
            f"course must be the id of one of your courses, got {shorten(requested)}."
        )
    for course in visible:
        if course.id == requested:
            return course
    if requested in known_ids:
        raise OptionsError(
            f"You are not enrolled in course {shorten(requested)}; ask its instructor.", 403
        )
    if len(visible) == 1 and visible[0].id == "":
        raise OptionsError("This hub has no courses configured; leave out 'course'.")
    offered = ", ".join(c.id for c in visible if c.id) or "none"
    raise OptionsError(f"There is no course {shorten(requested)}. Your courses: {offered}.")


def _choose_image(requested, course):
    if requested in ("", None):
        default = course.images[0]
        return default.key, default.image
    if not isinstance(requested, str) or len(requested) > MAX_KEY_LENGTH:
        raise OptionsError(
            f"image must be the name of one of the offered images, got {shorten(requested)}."
        )
    found = course.image_for(requested)
    if found is not None:
        return found.key, found.image
    if course.any_image:
        if not IMAGE_REF_RE.fullmatch(requested):
            raise OptionsError(f"{shorten(requested)} is not a valid image name.")
        return requested, requested
    offered = [img.key for img in course.images if img.key]
    if not offered:
        raise OptionsError("Choosing an image is not allowed here; leave out 'image'.")
    raise OptionsError(
        f"Image {shorten(requested)} is not offered here. Choose one of: "
        f"{', '.join(sorted(offered))}."
    )


def validate_options(
    user_options: Mapping | None, *, visible: Sequence, known_ids=(), max_gpus: int
) -> SpawnChoice:
    """Check ``user_options`` against the courses the user may use (``visible``) and the GPUs there
    are.

    ``known_ids`` are all course ids, so a course the user may not use gets 403 rather than "no such
    course".
    """
    if user_options is None:
        user_options = {}
    if not isinstance(user_options, Mapping):
        raise OptionsError("Spawn options must be a JSON object with the keys course, image, gpus.")
    unknown = [k for k in user_options if k not in ALLOWED_KEYS]
    if unknown:
        names = ", ".join(shorten(k, 30) for k in unknown[:5])
        raise OptionsError(
            f"Unknown spawn option(s) {names}. Allowed options: {', '.join(ALLOWED_KEYS)}."
        )
    course = _choose_course(user_options.get("course"), visible, set(known_ids))
    image_key, image = _choose_image(user_options.get("image"), course)
    limit = min(course.gpu_max, max_gpus)
    gpus = parse_gpu_count(user_options.get("gpus", min(course.gpu_default, limit)), limit)
    return SpawnChoice(course=course, image_key=image_key, image=image, gpus=gpus)


def options_from_form(formdata: Mapping) -> dict:
    """Form fields (lists of strings) -> user_options. Values are checked later, by
    :func:`validate_options`.

    Each course card has its own image and GPU fields (``image:<course>``, ``gpus:<course>``) so the
    form works without JavaScript: only the chosen course's fields count.
    """

    def first(key):
        values = formdata.get(key)
        return values[0] if values else None

    options = {}
    course = first("course")
    if course is not None:
        options["course"] = course
    suffix = f":{course}" if course is not None else ""
    for key in ("image", "gpus"):
        value = first(key + suffix)
        if value is None:
            value = first(key)
        if value is not None:
            options[key] = value
    gpus = options.get("gpus")
    # ASCII digits only: str.isdigit() accepts "²", which int() then refuses with a ValueError (a
    # 500, not the usual 400), and int() reads "٣" or "１" as numbers nobody typed. Anything else
    # stays a string, and parse_gpu_count refuses it with its message.
    if isinstance(gpus, str) and ASCII_COUNT_RE.fullmatch(gpus.strip()):
        options["gpus"] = int(gpus.strip())
    return options
