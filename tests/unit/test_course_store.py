"""The course files' store for the instructors' editor (course_store.py), on real files in tmp_path.

What it promises the hub and the editors: a reader never sees half a file, the mode stays, two
editors saving over one revision cannot both win, a stale save gets the file as it is now, nothing
outside the directory (or a dot-file) is touched, and no temporary file is left behind whatever
fails."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time

import pytest

from jupyter_gpuspawn import course_store, datafiles
from jupyter_gpuspawn.course_store import LOCK_FILE, CourseConflict, CourseStore, StoredCourse
from jupyter_gpuspawn.courses import CourseCatalog
from jupyter_gpuspawn.datafiles import MAX_FILE_BYTES

COURSE = "id: ml\ntitle: Machine Learning\nimages:\n  - {key: torch, image: local/torch:1}\n"


@pytest.fixture
def directory(tmp_path) -> str:
    d = tmp_path / "courses"
    d.mkdir()
    return str(d)


@pytest.fixture
def store(directory) -> CourseStore:
    return CourseStore(directory)


def put(directory: str, name: str, text: str = COURSE, mode: int = 0o644) -> str:
    """A course file as an admin writes it on the hub host."""
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def sha256_of_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def leftovers(directory: str) -> set:
    """Names in the directory other than course files and the lock: temporary files a failed write
    left."""
    return {n for n in os.listdir(directory) if n.startswith(".") and n != LOCK_FILE}


# ---- reads ---------------------------------------------------------------------------------------
def test_read_gives_text_revision_and_mtime(store, directory):
    path = put(directory, "ml.yaml")
    got = store.read(path)
    assert got == StoredCourse(path, COURSE, sha256_of_file(path), os.stat(path).st_mtime)


def test_files_lists_readable_course_files_only(store, directory):
    put(directory, "ml.yaml")
    put(directory, "cv.yml", "id: cv\n")
    put(directory, "big.yaml", "#" * (MAX_FILE_BYTES + 1))
    with open(os.path.join(directory, "latin1.yaml"), "wb") as f:
        f.write(b"title: caf\xe9\n")
    # would block a plain open(); must be skipped at once
    os.mkfifo(os.path.join(directory, "fifo.yaml"))
    put(directory, ".hidden.yaml")
    put(directory, "notes.txt")
    store.replace(
        os.path.join(directory, "ml.yaml"),
        COURSE,
        store.read(os.path.join(directory, "ml.yaml")).revision,
    )
    assert [os.path.basename(c.path) for c in store.files()] == ["cv.yml", "ml.yaml"]


@pytest.mark.parametrize(
    "where",
    [
        "../ml.yaml",  # beside the directory
        "sub/ml.yaml",  # below it
        "../courses-evil/ml.yaml",  # a sibling whose name starts like it
        ".hidden.yaml",
        LOCK_FILE,
        ".ml.yaml-abc123",  # dot-files: the lock, temporary files
        "notes.txt",
        "ml.yaml.bak",  # not course files
    ],
)
def test_paths_outside_the_directory_and_dot_files_are_refused(store, directory, where):
    os.makedirs(os.path.join(directory, "sub"), exist_ok=True)
    os.makedirs(os.path.join(directory, "..", "courses-evil"), exist_ok=True)
    path = put(directory, where)
    before = sha256_of_file(path)
    with pytest.raises(ValueError):
        store.read(path)
    with pytest.raises(ValueError):
        store.replace(path, "id: evil\n", before)
    assert sha256_of_file(path) == before


def test_a_path_through_dot_dot_back_into_the_directory_is_the_same_file(store, directory):
    path = put(directory, "ml.yaml")
    detour = os.path.join(directory, "..", os.path.basename(directory), "ml.yaml")
    assert store.read(detour) == store.read(path)


# ---- replace -------------------------------------------------------------------------------------
def test_replace_writes_keeps_the_mode_and_returns_what_a_read_gives(store, directory):
    path = put(directory, "ml.yaml", mode=0o640)
    new = store.replace(path, COURSE.replace("Machine", "Deep"), store.read(path).revision)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert new == store.read(path)
    assert "Deep Learning" in new.text and new.revision == sha256_of_file(path)
    assert leftovers(directory) == set()


def test_replace_writes_utf8_with_unix_line_ends_and_a_trailing_newline(store, directory):
    path = put(directory, "ml.yaml")
    new = store.replace(
        path, "id: ml\r\ntitle: Maschinelles Lernen für alle", store.read(path).revision
    )
    with open(path, "rb") as f:
        assert f.read() == "id: ml\ntitle: Maschinelles Lernen für alle\n".encode()
    assert new.revision == sha256_of_file(path)


def test_a_stale_revision_is_a_conflict_carrying_the_current_file(store, directory):
    path = put(directory, "ml.yaml")
    seen = store.read(path)
    theirs = store.replace(path, COURSE + "description: theirs\n", seen.revision)
    with pytest.raises(CourseConflict) as info:
        store.replace(path, COURSE + "description: mine\n", seen.revision)
    assert info.value.current == theirs
    assert "changed" in str(info.value)
    assert store.read(path).text.endswith("theirs\n")


def test_a_change_made_on_the_hub_host_is_a_conflict_too(store, directory):
    path = put(directory, "ml.yaml")
    seen = store.read(path)
    put(directory, "ml.yaml", COURSE + "# fixed by the admin\n")
    with pytest.raises(CourseConflict) as info:
        store.replace(path, COURSE + "description: mine\n", seen.revision)
    assert info.value.current.text.endswith("# fixed by the admin\n")


def test_replacing_a_removed_file_is_a_conflict_without_a_current_file(store, directory):
    path = put(directory, "ml.yaml")
    seen = store.read(path)
    os.unlink(path)
    with pytest.raises(CourseConflict) as info:
        store.replace(path, COURSE, seen.revision)
    assert info.value.current is None and "removed" in str(info.value)
    assert not os.path.exists(path)  # not created again behind the admin's back


def test_two_editors_saving_over_one_revision_exactly_one_wins(store, directory, monkeypatch):
    """Each write is slowed down, so without the lock both would pass the revision check before
    either renames."""
    path = put(directory, "ml.yaml")
    write = course_store.write_text_atomic

    def slow_write(*args, **kwargs):
        time.sleep(0.05)
        return write(*args, **kwargs)

    monkeypatch.setattr(course_store, "write_text_atomic", slow_write)
    for round_ in range(5):
        seen = store.read(path)
        barrier = threading.Barrier(2)
        results = {}

        # each round's objects, bound now (the threads end within the round)
        def save(editor: str, barrier=barrier, results=results, seen=seen, round_=round_) -> None:
            barrier.wait()
            try:
                results[editor] = store.replace(
                    path, COURSE + f"description: {editor} {round_}\n", seen.revision
                )
            except CourseConflict as e:
                results[editor] = e

        threads = [threading.Thread(target=save, args=(editor,)) for editor in ("alice", "bob")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        winners = [r for r in results.values() if isinstance(r, StoredCourse)]
        losers = [r for r in results.values() if isinstance(r, CourseConflict)]
        assert len(winners) == 1 and len(losers) == 1, results
        # the loser sees the winner's file
        assert losers[0].current == winners[0] == store.read(path)


def test_a_reader_never_sees_a_partial_file(store, directory):
    """Files large enough to take several write calls; a reader polls while the editor replaces
    them."""
    versions = [COURSE + f"# {v}\n" + ("x" * 79 + "\n") * 2000 for v in "ab"]
    path = put(directory, "ml.yaml", versions[0])
    done = threading.Event()
    seen, bad = set(), []

    def reader() -> None:
        while not done.is_set():
            try:
                # what the hub's catalog reads
                text = datafiles.read_text(path, kind="course files")
            except Exception as e:  # a missing file would be as wrong as half of one
                bad.append(repr(e))
                continue
            if text in versions:
                seen.add(text)
            else:
                bad.append(f"{len(text)} chars")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        revision = store.read(path).revision
        for i in range(150):
            revision = store.replace(path, versions[(i + 1) % 2], revision).revision
    finally:
        done.set()
        thread.join(10)
    assert bad == []
    assert len(seen) == 2  # the reader did run alongside the writes
    assert leftovers(directory) == set()


def test_a_symlinked_course_file_is_not_replaced(store, directory, tmp_path):
    target = tmp_path / "shared-ml.yaml"
    target.write_text(COURSE)
    link = os.path.join(directory, "ml.yaml")
    os.symlink(target, link)
    seen = store.read(link)  # shown, but edited on the hub host
    with pytest.raises(ValueError, match="is a symlink; edit it on the hub host"):
        store.replace(link, COURSE + "description: mine\n", seen.revision)
    assert os.path.islink(link) and target.read_text() == COURSE


def test_text_too_large_for_the_catalog_is_refused_before_writing(store, directory):
    path = put(directory, "ml.yaml")
    with pytest.raises(ValueError, match="limit"):
        store.replace(path, "#" * MAX_FILE_BYTES, store.read(path).revision)
    with pytest.raises(ValueError, match="limit"):
        store.create("big.yaml", "#" * MAX_FILE_BYTES)
    assert store.read(path).text == COURSE and [
        n for n in os.listdir(directory) if n != LOCK_FILE
    ] == ["ml.yaml"]


@pytest.mark.parametrize("failing", ["fsync", "chmod", "replace"])
def test_a_failed_write_leaves_no_temporary_file_and_the_old_file(
    store, directory, monkeypatch, failing
):
    path = put(directory, "ml.yaml")
    seen = store.read(path)

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    # datafiles.os is the os module: undone after the test
    monkeypatch.setattr(datafiles.os, failing, fail)
    with pytest.raises(OSError):
        store.replace(path, COURSE + "description: mine\n", seen.revision)
    with pytest.raises(OSError):
        store.create("cv.yaml", "id: cv\n")
    monkeypatch.undo()
    assert leftovers(directory) == set()
    assert sorted(n for n in os.listdir(directory) if not n.startswith(".")) == ["ml.yaml"]
    assert store.read(path) == seen


def test_a_write_that_raises_midway_leaves_no_temporary_file(store, directory):
    """A lone surrogate cannot be encoded: refused before a temporary file exists, and
    write_text_atomic itself removes its temporary file when writing the text raises."""
    path = put(directory, "ml.yaml")
    with pytest.raises(UnicodeEncodeError):
        store.replace(path, "title: \ud800\n", store.read(path).revision)
    with pytest.raises(UnicodeEncodeError):
        datafiles.write_text_atomic(path, "x" * 100_000 + "\ud800", durable=True)
    assert leftovers(directory) == set()
    assert store.read(path).text == COURSE


def test_the_catalog_loads_the_replaced_file(store, directory):
    path = put(directory, "ml.yaml")
    catalog = CourseCatalog(directory)
    assert [c.title for c in catalog.refresh().courses] == ["Machine Learning"]
    store.replace(path, COURSE.replace("Machine", "Deep"), store.read(path).revision)
    assert [c.title for c in catalog.refresh().courses] == ["Deep Learning"]


# ---- create --------------------------------------------------------------------------------------
def test_create_writes_a_new_file_with_mode_0644(store, directory):
    old = os.umask(0o077)  # whatever the umask, the catalog (another user, maybe) must read it
    try:
        new = store.create("cv.yaml", "id: cv")
    finally:
        os.umask(old)
    path = os.path.join(directory, "cv.yaml")
    assert new == store.read(path) and new.text == "id: cv\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert store.path_for("cv") == path


def test_create_refuses_an_existing_file_or_link(store, directory, tmp_path):
    put(directory, "ml.yaml")
    os.symlink(tmp_path / "nowhere.yaml", os.path.join(directory, "dangling.yaml"))
    for name in ("ml.yaml", "dangling.yaml"):
        with pytest.raises(FileExistsError):
            store.create(name, "id: other\n")
    assert store.read(os.path.join(directory, "ml.yaml")).text == COURSE
    assert not os.path.exists(tmp_path / "nowhere.yaml")  # not written through the link


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".yaml",
        ".ml.yaml",
        "sub/ml.yaml",
        "../ml.yaml",
        "/tmp/ml.yaml",
        "ml.yml",
        "ml.json",
        "ml",
        "ML.yaml",
        "ml .yaml",
        "ml.yaml/",
        "-ml.yaml",
        "m" * 65 + ".yaml",
        "ml\n.yaml",
    ],
)
def test_create_refuses_names_that_are_not_a_plain_id_yaml(store, directory, name):
    with pytest.raises(ValueError):
        store.create(name, COURSE)
    assert [n for n in os.listdir(directory) if n != LOCK_FILE] == []


@pytest.mark.parametrize("course_id", ["", "../ml", "ml/x", ".ml", "ML", "ml\n"])
def test_path_for_refuses_what_is_not_a_course_id(store, course_id):
    with pytest.raises(ValueError):
        store.path_for(course_id)
