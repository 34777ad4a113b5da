"""The spawn form: course cards with image and GPU choices and live GPU availability.

Rendered with Jinja (autoescaped: every value from course files or user_options is HTML-escaped)
from
``templates/gpuspawn_form.html``; sites override it by putting a file of that name in a directory
listed in
``GPUDockerSpawner.form_template_paths``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jinja2

from .allocation import largest_server

TEMPLATE = "gpuspawn_form.html"


@dataclass(frozen=True)
class CourseCard:
    id: str
    title: str
    description: str
    images: tuple[tuple[str, str, bool], ...]  # (key, label, selected)
    gpu_choices: tuple[tuple[int, str, bool], ...]  # (count, label, selected)
    availability: str
    selected: bool
    budget: str = ""  # "6.5 of 10 GPU-hours left this week; resets Monday 00:00"


def gpu_models(gpus: Sequence) -> str:
    counts = Counter(gpu.label for gpu in gpus)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n}× {name}" for name, n in counts.most_common())


def availability(
    course, gpus: Sequence, allocator, line: str = "", waiting: int = 0
) -> tuple[str, int]:
    """The card's availability text and the most GPUs one server could get now (all free ones on one
    host, the most free on one node of a Swarm). ``line`` is the queue's word ("3 waiting · you
    would be 4th"), shown when no GPU is free or anyone waits (a new start goes behind them);
    without it, that reads as "try again later"."""
    total = len(gpus)
    if total == 0 or course.gpu_max == 0:
        return ("CPU only" if total else "No GPUs on this server: CPU only"), 0
    free = allocator.free_count(gpus, course.policy, course.max_users_per_gpu)
    wait = line or "no queue here: try again later"
    if free == 0:
        which = "The only GPU is" if total == 1 else f"All {total} GPUs are"
        return f"{which} in use — {gpu_models(gpus)} · {wait}", 0
    if waiting:
        return f"{free} of {total} GPUs free — {gpu_models(gpus)} · {wait}", 0
    if course.policy == "shared":
        text = (
            f"{free} of {total} GPUs have room — {gpu_models(gpus)} "
            f"(shared, up to {course.max_users_per_gpu} per GPU)"
        )
    else:
        text = f"{free} of {total} GPUs free — {gpu_models(gpus)}"
    return text, allocator.largest_request(gpus, course.policy, course.max_users_per_gpu)


def course_cards(
    courses: Sequence,
    previous: Mapping,
    gpus: Sequence,
    allocator,
    queue_line=lambda course: "",
    waiting: int = 0,
    budgets: Mapping = None,
) -> list:
    """View models for the cards; the user's previous choice is preselected where it still applies.
    ``queue_line(course)`` says where the user would stand in the GPU queue ("" where the course has
    none)."""
    chosen_id = previous.get("course") or ""
    if not any(c.id == chosen_id for c in courses):
        chosen_id = courses[0].id if courses else ""
    cards = []
    for course in courses:
        selected = course.id == chosen_id
        wanted_image = previous.get("image") if selected else None
        image_keys = [img.key for img in course.images]
        if wanted_image not in image_keys:
            wanted_image = image_keys[0]
        images = tuple(
            (img.key, img.label or img.key or img.image, img.key == wanted_image)
            for img in course.images
        )
        text, free = availability(course, gpus, allocator, queue_line(course), waiting)
        limit = min(course.gpu_max, largest_server(gpus))
        wanted_gpus = previous.get("gpus") if selected else None
        if (
            not isinstance(wanted_gpus, int)
            or isinstance(wanted_gpus, bool)
            or not 0 <= wanted_gpus <= limit
        ):
            wanted_gpus = min(course.gpu_default, limit)
        choices = []
        for n in range(limit + 1):
            label = "0 — CPU only" if n == 0 else f"{n} GPU" + ("s" if n > 1 else "")
            if n > free:
                label += (
                    f" (only {free} free now{', you would wait' if queue_line(course) else ''})"
                )
            choices.append((n, label, n == wanted_gpus))
        cards.append(
            CourseCard(
                course.id,
                course.title,
                course.description,
                images,
                tuple(choices),
                text,
                selected,
                (budgets or {}).get(course.id, ""),
            )
        )
    return cards


def template_environment(paths: Sequence[str]) -> jinja2.Environment:
    loaders = [jinja2.FileSystemLoader(list(paths))] if paths else []
    loaders.append(jinja2.FileSystemLoader(os.path.join(os.path.dirname(__file__), "templates")))
    return jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), autoescape=True)


def render_form(
    env: jinja2.Environment,
    *,
    courses,
    previous,
    snapshot,
    allocator,
    admin_errors=(),
    queue_line=lambda course: "",
    waiting: int = 0,
    notice: str = "",
    budgets: Mapping = None,
) -> str:
    # saved options that are not an object (JupyterHub 5 saves a spawn request's body as it is)
    # preselect nothing
    if not isinstance(previous, Mapping):
        previous = {}
    cards = course_cards(courses, previous, snapshot.gpus, allocator, queue_line, waiting, budgets)
    free_now = allocator.free_count(snapshot.gpus)
    return env.get_template(TEMPLATE).render(
        cards=cards,
        simulated=snapshot.simulated,
        gpu_total=len(snapshot.gpus),
        gpu_free=free_now,
        gpu_models=gpu_models(snapshot.gpus) if snapshot.gpus else "",
        admin_errors=list(admin_errors),
        inventory_errors=list(snapshot.errors),
        notice=notice,
    )
