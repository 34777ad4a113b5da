"""Reading and writing course files for the instructors' editor (a web page served by a process
beside the hub).

The hub's catalog reloads a course file whenever it changes (courses.CourseCatalog), so a write must
never show it half a file, and two instructors editing one course must not silently overwrite each
other. Hence:

- writes are atomic: a temporary dot-file in the same directory, fsync, the old file's mode, one
  rename, fsync of the directory (datafiles.write_text_atomic). The catalog skips dot-files, so it
  never loads the temporary file;
- writes compare and swap: the editor sends the revision (sha256 of the bytes) it loaded, and the
  file is only replaced if it still has that revision. Check and rename happen under an exclusive
  ``flock`` on
  ``.gpuspawn-courses.lock`` in the directory, so of two editors saving over one revision exactly
  one wins and the other gets :class:`CourseConflict` with what is there now. Someone editing on the
  hub host with a text editor takes no lock; the revision check still notices their change unless it
  lands in the instant between check and rename.

Reads go through datafiles.read_text: capped in size, regular files only, never blocking on a FIFO.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from .courses import COURSE_FILE_SUFFIXES, ID_PATTERN, course_files
from .datafiles import MAX_FILE_BYTES, DataFileError, read_text_and_stat, write_text_atomic

LOCK_FILE = ".gpuspawn-courses.lock"  # a dot-file: the catalog ignores it
NEW_FILE_SUFFIX = ".yaml"
_KIND = "course files"


class CourseConflict(Exception):
    """The file changed since the editor loaded it."""

    def __init__(self, current: StoredCourse | None):
        """``current``: the file as it is now, for the editor to show or merge; None: the file is
        gone."""
        self.current = current
        what = "was removed" if current is None else "was changed by someone else"
        name = "the course file" if current is None else os.path.basename(current.path)
        super().__init__(f"{name} {what} since you opened it")


@dataclass(frozen=True)
class StoredCourse:
    path: str
    text: str
    revision: str  # sha256 hex of the file's bytes: what the editor saw
    mtime: float  # epoch seconds


def revision_of(text: str) -> str:
    """The revision of a file holding ``text``: sha256 of its UTF-8 bytes (a read that succeeded
    decoded them strictly, so encoding the text gives back exactly the bytes on disk)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalized_text(text: str) -> str:
    """What is written for ``text``: Unix line ends (a browser's form sends CRLF) and a trailing
    newline."""
    text = text.replace("\r\n", "\n")
    return text if text.endswith("\n") else text + "\n"


class CourseStore:
    """Reads and writes course files in one directory. Writes are atomic (a temp file '.<name>-XXXX'
    in the same directory, fsync, chmod to the old file's mode or 0644, os.replace, fsync of the
    directory), so the hub's catalog, which reloads files on change, sees the old file or the new
    one, never half of one; and compare-and-swap on the revision under an exclusive fcntl.flock on
    '<dir>/.gpuspawn-courses.lock' (dot-file: the catalog ignores it), so two editors of one course
    cannot both win (no lost update)."""

    def __init__(self, directory: str):
        self.directory = os.path.abspath(directory)

    # ---- reads -----------------------------------------------------------------------------------
    def files(self) -> list[StoredCourse]:
        """Every course file of the directory (as the catalog lists them); files that cannot be read
        (unreadable, too large, not UTF-8, not a regular file, removed meanwhile) are left out: the
        catalog reports those."""
        stored = []
        for path in course_files(self.directory):
            try:
                stored.append(self._read(path))
            except (OSError, DataFileError):
                continue
        return stored

    def read(self, path: str) -> StoredCourse:
        """The course file ``path``, which must lie directly in the directory and be named like a
        course file (ValueError otherwise: the editor never reaches other files). OSError and
        DataFileError pass through."""
        return self._read(self._checked(path))

    def path_for(self, course_id: str) -> str:
        """Where a new course ``course_id`` is written: ``<directory>/<id>.yaml``."""
        if not re.match(ID_PATTERN, course_id):
            raise ValueError(
                f"{course_id!r} is not a course id (lowercase letters, digits, - and _)"
            )
        return os.path.join(self.directory, course_id + NEW_FILE_SUFFIX)

    # ---- writes ----------------------------------------------------------------------------------
    def replace(self, path: str, text: str, expected_revision: str) -> StoredCourse:
        """Write ``text`` to the course file ``path`` if it still has ``expected_revision``;
        CourseConflict (with the file as it is now, or None if it is gone) if not. The file keeps
        its mode. A symlinked file is refused (ValueError): replacing it would replace the link, not
        the file it points to."""
        path = self._checked(path)
        text = self._prepared(text)
        with self._locked():
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                raise CourseConflict(None) from None
            if stat.S_ISLNK(info.st_mode):
                raise ValueError(f"{os.path.basename(path)} is a symlink; edit it on the hub host")
            try:
                current = self._read(path)
            except FileNotFoundError:
                raise CourseConflict(None) from None
            if current.revision != expected_revision:
                raise CourseConflict(current)
            return self._write(path, text, stat.S_IMODE(info.st_mode))

    def create(self, file_name: str, text: str) -> StoredCourse:
        """Write a new course file ``file_name`` (a plain '<id>.yaml': no directory, no leading dot;
        ValueError otherwise) with mode 0644. FileExistsError if a file (or link) of that name
        exists."""
        stem = file_name[: -len(NEW_FILE_SUFFIX)] if file_name.endswith(NEW_FILE_SUFFIX) else ""
        if not re.match(ID_PATTERN, stem):
            raise ValueError(
                f"{file_name!r} is not a course file name: expected <id>{NEW_FILE_SUFFIX}, the id "
                f"made "
                "of lowercase letters, digits, - and _"
            )
        path = os.path.join(self.directory, file_name)
        text = self._prepared(text)
        with self._locked():
            if os.path.lexists(path):
                raise FileExistsError(f"{file_name} already exists")
            return self._write(path, text, 0o644)

    # ---- helpers ---------------------------------------------------------------------------------
    def _checked(self, path: str) -> str:
        """``path`` made absolute, or ValueError unless it names a course file directly in the
        directory (no subdirectory, no '..' out of it, no dot-file such as the lock or a temporary
        file)."""
        full = os.path.abspath(path)
        name = os.path.basename(full)
        if os.path.dirname(full) != self.directory:
            raise ValueError(f"{path} is not in the course directory {self.directory}")
        if name.startswith(".") or not name.endswith(COURSE_FILE_SUFFIXES):
            raise ValueError(
                f"{name} is not a course file (*.yaml, *.yml or *.json, not starting with '.')"
            )
        return full

    @staticmethod
    def _read(path: str) -> StoredCourse:
        text, info = read_text_and_stat(path, kind=_KIND, max_bytes=MAX_FILE_BYTES)
        return StoredCourse(path=path, text=text, revision=revision_of(text), mtime=info.st_mtime)

    @staticmethod
    def _prepared(text: str) -> str:
        """``text`` as it will be written; ValueError if it cannot be, or would be too large for the
        catalog to read (checked before anything touches the directory)."""
        text = normalized_text(text)
        size = len(text.encode("utf-8"))  # UnicodeEncodeError (a ValueError) for lone surrogates
        if size > MAX_FILE_BYTES:
            raise ValueError(
                f"the course file would be {size // 1024} KiB; the limit is "
                f"{MAX_FILE_BYTES // 1024} KiB"
            )
        return text

    @staticmethod
    def _write(path: str, text: str, mode: int) -> StoredCourse:
        write_text_atomic(path, text, mode=mode, durable=True)
        return StoredCourse(
            path=path, text=text, revision=revision_of(text), mtime=os.stat(path).st_mtime
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the directory's write lock. Every call opens the lock file anew: flock belongs to
        the open file, so two threads of one process exclude each other as two processes do."""
        lock_path = os.path.join(self.directory, LOCK_FILE)
        # never create a file where a planted link points
        flags = os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(lock_path, os.O_RDWR | flags, 0o644)
        # created by another user (the hub host's admin): a read-only open locks too
        except PermissionError:
            fd = os.open(lock_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock
