"""Validation of ``user_options``: one path for the spawn form and the REST API.

Allowed keys: ``course`` (course id), ``image`` (a key, never a raw image name unless the admin allows any image),
``gpus`` (int). Anything else is refused with a message a student understands; nothing is passed through to
Docker.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Optional

ALLOWED_KEYS = ("course", "image", "gpus")
MAX_KEY_LENGTH = 128
# A docker image reference (registry/name:tag@digest); only consulted when the admin allows any image ("*").
IMAGE_REF_RE = re.compile(r"[a-z0-9]+(?:[._/:-][a-zA-Z0-9]+)*(?:@sha256:[0-9a-f]{64})?")


class OptionsError(ValueError):
    """A user_options problem; ``str(e)`` is the message for the student (HTTP 400)."""


@dataclass(frozen=True)
class SpawnChoice:
    image_key: str  # key in allowed images ("" = the hub's default image)
    image: str  # the docker image to run
    gpus: int
    course: str = ""


def shorten(value, limit=40) -> str:
    """A user-supplied value fit to quote back in an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_gpu_count(value, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionsError(f"gpus must be a whole number from 0 to {maximum}, got {shorten(value)}.")
    if not 0 <= value <= maximum:
        raise OptionsError(f"gpus must be a whole number from 0 to {maximum}, got {shorten(value)}.")
    return value


def validate_options(
    user_options: Optional[Mapping],
    *,
    allowed_images,
    default_image: str,
    default_gpus: int,
    max_gpus: int,
) -> SpawnChoice:
    """Check ``user_options`` against the hub's images and GPU bounds.

    ``allowed_images`` is DockerSpawner's: a dict key -> image, or ``"*"`` (any image; not recommended).
    An empty dict means users cannot choose an image (DockerSpawner 13+ default-deny).
    """
    if user_options is None:
        user_options = {}
    if not isinstance(user_options, Mapping):
        raise OptionsError("Spawn options must be a JSON object with the keys course, image, gpus.")
    unknown = [k for k in user_options if k not in ALLOWED_KEYS]
    if unknown:
        names = ", ".join(shorten(k, 30) for k in unknown[:5])
        raise OptionsError(f"Unknown spawn option(s) {names}. Allowed options: {', '.join(ALLOWED_KEYS)}.")

    course = user_options.get("course", "")
    if course not in ("", None):
        raise OptionsError("This hub has no courses configured; leave out 'course'.")

    image_key = user_options.get("image", "")
    if image_key in ("", None):
        image_key, image = "", default_image
    elif not isinstance(image_key, str) or len(image_key) > MAX_KEY_LENGTH:
        raise OptionsError(f"image must be the name of one of the offered images, got {shorten(image_key)}.")
    elif allowed_images == "*":
        if not IMAGE_REF_RE.fullmatch(image_key):
            raise OptionsError(f"{shorten(image_key)} is not a valid image name.")
        image = image_key
    elif not allowed_images:
        raise OptionsError("Choosing an image is not allowed on this hub; leave out 'image'.")
    elif image_key not in allowed_images:
        offered = ", ".join(sorted(allowed_images))
        raise OptionsError(f"Image {shorten(image_key)} is not offered here. Choose one of: {offered}.")
    else:
        image = allowed_images[image_key]

    gpus = parse_gpu_count(user_options.get("gpus", default_gpus), max_gpus)
    return SpawnChoice(image_key=image_key, image=image, gpus=gpus)


def options_from_form(formdata: Mapping) -> dict:
    """Form fields (lists of strings) -> user_options. Values are checked later, by :func:`validate_options`."""
    options = {}
    for key in ALLOWED_KEYS:
        values = formdata.get(key)
        if values:
            options[key] = values[0]
    gpus = options.get("gpus")
    if isinstance(gpus, str) and gpus.strip().isdigit() and len(gpus.strip()) <= 4:
        options["gpus"] = int(gpus.strip())
    return options
