"""Errors the spawner shows to students: the low room every other module may import."""

from __future__ import annotations

from tornado import web


class SpawnRefused(web.HTTPError):
    """An HTTP error whose text, wherever JupyterHub shows it (spawn page, progress, API), is just
    our message."""

    def __str__(self):
        return self.log_message or super().__str__()


class LinkNotStarted(Exception):
    """A spawn link was not followed (spawn_from_link is off): JupyterHub shows the spawn form with
    this message, as a normal page (not an HTTP error: nothing is wrong with the student's
    request)."""


def engine_error_text(error: Exception, limit: int = 200) -> str:
    """A Docker error in one short line (docker-py's explanation, without the request URL)."""
    text = str(getattr(error, "explanation", "") or error).strip().replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
