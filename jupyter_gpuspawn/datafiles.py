"""Reading the small YAML/JSON files admins and instructors write (course files, the simulated-GPU
file).

The hub reads these files while it serves requests, so reading one must stay cheap whatever it
holds:
- the size is capped, and a file is read at most ``max_bytes + 1`` bytes far, never whole;
- only regular files are read, opened without blocking (a FIFO named ``x.yaml`` would otherwise hang
  the hub);
- YAML anchors and aliases are refused as soon as the parser meets one: a few hundred bytes of
  nested aliases (the "billion laughs" file) expand to millions of items and keep ``yaml.safe_load``
  and the schema check after it busy for minutes. Nobody needs them in these files.
Messages are short and never quote more than a line of the file.
"""

from __future__ import annotations

import json
import os
import stat

MAX_FILE_BYTES = 256 * 1024
MAX_MESSAGE = 300


class DataFileError(ValueError):
    """A file that cannot be read as a small YAML/JSON document. The message leaves out the file
    name, so the caller can prefix it the way its other messages name files."""


class _AliasFound(Exception):
    pass


def _no_alias_loader():
    import yaml  # lazily: importing this package must stay cheap

    class NoAliasSafeLoader(yaml.SafeLoader):
        """yaml.SafeLoader that stops at the first anchor (&) or alias (*), before anything is
        expanded."""

        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise _AliasFound()
            return super().compose_node(parent, index)

    return NoAliasSafeLoader


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def read_text(path: str, *, kind: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of the regular file ``path``. DataFileError if it is not a regular file or is
    larger than
    ``max_bytes``; OSError (e.g. FileNotFoundError) passes through."""
    return read_text_and_stat(path, kind=kind, max_bytes=max_bytes)[0]


def read_text_and_stat(
    path: str, *, kind: str, max_bytes: int = MAX_FILE_BYTES
) -> tuple[str, os.stat_result]:
    """read_text, plus the stat of the file it read: both from one open file, so they describe the
    same version even while the file is being replaced (an editor's "what I saw" and "when it was
    written")."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataFileError("is not a regular file")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise DataFileError(f"is larger than {max_bytes // 1024} KiB, the limit for {kind}")
    try:
        return data.decode("utf-8"), info
    except UnicodeDecodeError as e:
        raise DataFileError(f"is not UTF-8 text (bad byte at offset {e.start})") from None


def parse_text(text: str, *, as_json: bool, kind: str):
    """``text`` parsed as JSON, or as YAML without anchors/aliases. Raises DataFileError with a
    short message."""
    what = "JSON" if as_json else "YAML"
    try:
        if as_json:
            return json.loads(text)
        import yaml

        # a SafeLoader subclass: no Python objects
        return yaml.load(text, Loader=_no_alias_loader())
    except _AliasFound:
        raise DataFileError(f"YAML anchors/aliases (&, *) are not allowed in {kind}") from None
    except RecursionError:
        raise DataFileError(f"cannot be read as {what}: nested too deeply") from None
    except Exception as e:
        raise DataFileError(f"cannot be read as {what}: {_short(e)}") from None


def read_structured_file(path: str, *, kind: str, max_bytes: int = MAX_FILE_BYTES):
    """Read and parse ``path``: JSON if its name ends in .json, else YAML (a superset of JSON).
    ``kind`` names such files in messages, e.g. "course files". Raises DataFileError or OSError."""
    text = read_text(path, kind=kind, max_bytes=max_bytes)
    return parse_text(text, as_json=path.endswith(".json"), kind=kind)


def write_json_atomic(path: str, data, *, mode: int = 0o644, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` as JSON in one rename: a reader sees the old file or the new
    one, never half of one. ``durable``: on disk, rename included, before returning (records a power
    cut must not lose)."""
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True), mode=mode, durable=durable)


def write_text_atomic(path: str, text: str, *, mode: int = 0o644, durable: bool = False) -> None:
    """Replace ``path`` with ``text`` (UTF-8, written as is: no newline translation) in one rename,
    through a temporary dot-file ``.<name>-XXXX`` in the same directory (readers that skip dot-files
    never see it; it is removed on any error). A reader sees the old file or the new one, never half
    of one. ``durable``: on disk, rename included, before returning (records a power cut must not
    lose)."""
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + "-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; readers may be other users (a container's)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
