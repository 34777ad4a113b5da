"""GPU usage records (usage.py) against real SQLite files, and the `jupyter-gpuspawn usage` command
reading them.

Times are explicit epoch seconds except where the CLI reads the clock. A process killed with SIGKILL
mid-way shows that the records it wrote survive; a reader and a writer in two processes show that
WAL keeps them apart."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

import jupyter_gpuspawn
from jupyter_gpuspawn import usage
from jupyter_gpuspawn.usage import (
    SCHEMA_VERSION,
    Hold,
    UsageDB,
    UsageError,
    grants_table,
    meta_table,
    usage_table,
)

# the code under test, for subprocesses: the package this test imported, not whatever is installed
PACKAGE_ROOT = str(Path(jupyter_gpuspawn.__file__).resolve().parent.parent)


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "usage.sqlite"


@pytest.fixture
def db(path):
    d = UsageDB(f"sqlite:///{path}")
    yield d
    d.dispose()


def rows(db, **where) -> list:
    """Every row (open or closed), oldest first, filtered by column == value."""
    return [r for r in db.records() if all(r[k] == v for k, v in where.items())]


def open_rows(db, **where) -> list:
    return [r for r in rows(db, **where) if r["end"] is None]


def hold(user, gpus, server="", course="ml", share=1.0, start=None) -> Hold:
    return Hold(user, server, course, tuple(gpus), share, start=start)


# ---- schema --------------------------------------------------------------------------------------
def test_schema_created_on_first_use(path, db):
    assert not path.exists()
    assert db.schema_version() == SCHEMA_VERSION == 2
    raw = sqlite3.connect(path)
    try:
        tables = {
            name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        assert {
            "gpuspawn_meta",
            "gpuspawn_gpu_usage",
            "gpuspawn_budget_grants",
            "gpuspawn_course_changes",
        } <= tables
        assert raw.execute(
            "SELECT value FROM gpuspawn_meta WHERE key = 'schema_version'"
        ).fetchall() == [("2",)]
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()
    # a second UsageDB on the same file neither re-creates nor re-inserts the version
    again = UsageDB(f"sqlite:///{path}")
    try:
        assert again.schema_version() == 2
        again.record(hold("alice", ["GPU-0"]), 100.0)
    finally:
        again.dispose()
    assert len(rows(db)) == 1


def test_first_write_creates_the_schema(path, db):
    db.record(hold("alice", ["GPU-0"]), 100.0)  # no ensure_schema/schema_version call first
    assert db.schema_version() == 2
    assert len(open_rows(db, user="alice")) == 1


def test_newer_schema_is_refused(path, db):
    db.record(hold("alice", ["GPU-0"]), 100.0)
    db.dispose()
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("UPDATE gpuspawn_meta SET value = '3' WHERE key = 'schema_version'")
    raw.close()
    newer = UsageDB(f"sqlite:///{path}")
    try:
        for call in (
            newer.schema_version,
            lambda: newer.record(hold("bob", ["GPU-1"]), 200.0),
            lambda: newer.totals(0.0, 300.0),
        ):
            with pytest.raises(UsageError) as info:
                call()
            message = str(info.value)
            assert (
                "schema version 3" in message
                and "newer" in message
                and "upgrade jupyter-gpuspawn" in message
            )
            assert str(path) in message
    finally:
        newer.dispose()
    raw = sqlite3.connect(path)
    try:  # nothing was written to it
        assert raw.execute("SELECT user FROM gpuspawn_gpu_usage").fetchall() == [("alice",)]
        assert raw.execute(
            "SELECT value FROM gpuspawn_meta WHERE key = 'schema_version'"
        ).fetchall() == [("3",)]
    finally:
        raw.close()


def test_older_schema_is_migrated_in_place(path, db, monkeypatch):
    """The MIGRATIONS path, with a version-3 step added for the test."""
    db.record(hold("alice", ["GPU-0"]), 100.0)
    db.dispose()

    def add_column(conn):
        conn.exec_driver_sql(
            "ALTER TABLE gpuspawn_gpu_usage ADD COLUMN note VARCHAR(20) DEFAULT 'migrated'"
        )

    monkeypatch.setattr(usage, "SCHEMA_VERSION", 3)
    monkeypatch.setitem(usage.MIGRATIONS, 3, add_column)
    upgraded = UsageDB(f"sqlite:///{path}")
    try:
        assert upgraded.schema_version() == 3
    finally:
        upgraded.dispose()
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("SELECT user, note FROM gpuspawn_gpu_usage").fetchall() == [
            ("alice", "migrated")
        ]
    finally:
        raw.close()


def create_version_1_database(path) -> None:
    """A database as release 1 made it: its three tables (create_all of its metadata), version "1",
    a usage row and a grant."""
    old = sa.MetaData()
    tables = [t.to_metadata(old) for t in (meta_table, usage_table, grants_table)]
    engine = sa.create_engine(f"sqlite:///{path}", future=True)
    try:
        with engine.begin() as conn:
            old.create_all(conn)
            conn.execute(tables[0].insert().values(key="schema_version", value="1"))
            conn.execute(
                tables[1]
                .insert()
                .values(
                    user="alice",
                    server="",
                    course="ml",
                    gpu_uuid="GPU-0",
                    node="",
                    share=1.0,
                    start=100.0,
                    end=3700.0,
                    last_seen=3700.0,
                    end_reason="stopped",
                )
            )
            conn.execute(
                tables[2]
                .insert()
                .values(
                    user="alice",
                    course="ml",
                    week_start=0.0,
                    hours=2.0,
                    granted_by="admin",
                    granted_at=50.0,
                )
            )
    finally:
        engine.dispose()


def test_version_1_database_is_upgraded_to_version_2(path):
    create_version_1_database(path)
    raw = sqlite3.connect(path)
    try:
        assert "gpuspawn_course_changes" not in {
            n for (n,) in raw.execute("SELECT name FROM sqlite_master")
        }
    finally:
        raw.close()
    # the admin page does not upgrade: it waits for the hub
    reader = UsageDB(f"sqlite:///{path}", create=False)
    try:
        with pytest.raises(UsageError, match="schema version 1"):
            reader.course_changes("ml")
    finally:
        reader.dispose()
    hub = UsageDB(f"sqlite:///{path}")
    try:
        assert hub.schema_version() == 2
        hub.record_course_change("ml", "prof", "edited", ["title"], "a" * 64, 4000.0)
        assert [c["user"] for c in hub.course_changes("ml")] == ["prof"]
        assert [(r["user"], r["start"], r["end"]) for r in hub.records()] == [
            ("alice", 100.0, 3700.0)
        ]
        assert hub.granted_hours("alice", 0.0, 100.0, course="ml") == 2.0
    finally:
        hub.dispose()
    raw = sqlite3.connect(path)
    try:
        assert raw.execute(
            "SELECT value FROM gpuspawn_meta WHERE key = 'schema_version'"
        ).fetchall() == [("2",)]
        indexes = {n for (n,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "ix_gpuspawn_course_changes_course_at" in indexes
    finally:
        raw.close()
    again = UsageDB(f"sqlite:///{path}", create=False)  # upgraded: now the reader reads it
    try:
        assert [c["action"] for c in again.course_changes("ml")] == ["edited"]
    finally:
        again.dispose()


# ---- record / close ------------------------------------------------------------------------------
def test_record_is_idempotent(db):
    h = hold("alice", ["GPU-0", "GPU-1"], course="ml", share=0.5)
    db.record(h, 100.0)
    db.record(h, 200.0)
    db.record(h, 300.0)
    got = open_rows(db, user="alice")
    assert sorted(r["gpu_uuid"] for r in got) == ["GPU-0", "GPU-1"]
    assert {(r["start"], r["server"], r["course"], r["share"], r["node"]) for r in got} == {
        (100.0, "", "ml", 0.5, "")
    }
    assert len(rows(db)) == 2  # nothing closed and re-opened either


def test_record_with_other_gpus_closes_the_old_rows(db):
    db.record(hold("alice", ["GPU-0", "GPU-1"]), 100.0)
    db.record(hold("alice", ["GPU-1", "GPU-2"]), 200.0)
    by_gpu = {r["gpu_uuid"]: r for r in rows(db, user="alice")}
    assert len(rows(db)) == 3
    assert (by_gpu["GPU-0"]["end"], by_gpu["GPU-0"]["end_reason"]) == (200.0, "stopped")
    # kept, not re-opened
    assert (by_gpu["GPU-1"]["start"], by_gpu["GPU-1"]["end"]) == (100.0, None)
    assert (by_gpu["GPU-2"]["start"], by_gpu["GPU-2"]["end"]) == (200.0, None)


def test_record_start(db):
    # known earlier start: the container's creation
    db.record(hold("alice", ["GPU-0"], start=50.0), 100.0)
    db.record(hold("bob", ["GPU-1"], start=150.0), 100.0)  # a start in the future is now
    assert open_rows(db, user="alice")[0]["start"] == 50.0
    assert open_rows(db, user="alice")[0]["last_seen"] == 100.0
    assert open_rows(db, user="bob")[0]["start"] == 100.0


def test_close_only_that_servers_rows(db):
    db.record(hold("a-b", ["GPU-0"]), 100.0)  # user "a-b", default server
    db.record(hold("a", ["GPU-1"], server="b"), 100.0)  # user "a", server "b"
    db.record(hold("a", ["GPU-2", "GPU-3"]), 100.0)  # user "a", default server
    db.record(hold("b", ["GPU-4"], server="a"), 100.0)
    assert db.close("a", "b", "crashed", 300.0) == 1
    assert [
        (r["end"], r["end_reason"], r["last_seen"]) for r in rows(db, user="a", server="b")
    ] == [(300.0, "crashed", 300.0)]
    assert len(open_rows(db, user="a-b")) == 1
    assert len(open_rows(db, user="a", server="")) == 2
    assert len(open_rows(db, user="b")) == 1
    assert db.close("a-b", "", "stopped", 400.0) == 1
    assert len(open_rows(db, user="a", server="")) == 2
    assert db.close("a", "", "reclaimed idle", 500.0) == 2
    assert db.close("a", "", "stopped", 600.0) == 0  # already closed: unchanged
    assert {r["end"] for r in rows(db, user="a", server="")} == {500.0}
    assert open_rows(db) == [rows(db, user="b")[0]]


# ---- reconcile -----------------------------------------------------------------------------------
def test_reconcile_refreshes_running_and_opens_missing(db):
    db.record(hold("alice", ["GPU-0"]), 100.0)
    running = [
        hold("alice", ["GPU-0"], start=90.0),
        hold("bob", ["GPU-1", "GPU-2"], server="lab", start=50.0),
    ]
    assert db.reconcile(running, keep=(), listed_at=150.0, now=160.0, reason="crashed") == []
    alice = open_rows(db, user="alice")
    # kept its start, seen now
    assert [(r["start"], r["last_seen"]) for r in alice] == [(100.0, 160.0)]
    bob = open_rows(db, user="bob")
    assert sorted(r["gpu_uuid"] for r in bob) == ["GPU-1", "GPU-2"]
    assert {(r["start"], r["last_seen"], r["server"]) for r in bob} == {(50.0, 160.0, "lab")}
    # a second round changes nothing but last_seen
    assert db.reconcile(running, keep=(), listed_at=200.0, now=210.0, reason="crashed") == []
    assert len(rows(db)) == 3
    assert {r["last_seen"] for r in open_rows(db)} == {210.0}


def test_reconcile_closes_vanished_servers_when_last_seen(db):
    db.record(hold("alice", ["GPU-0"]), 100.0)
    db.record(hold("carol", ["GPU-1", "GPU-2"], server="big"), 100.0)
    db.record(hold("dave", ["GPU-3"]), 100.0)
    db.reconcile(
        [hold("alice", ["GPU-0"]), hold("carol", ["GPU-1", "GPU-2"], server="big")],
        keep=(),
        # dave vanished already: last seen at 100
        listed_at=150.0,
        now=160.0,
        reason="crashed",
    )
    closed = db.reconcile(
        [hold("alice", ["GPU-0"])], keep=(), listed_at=250.0, now=260.0, reason="hub restart"
    )
    assert sorted(closed) == [("carol", "big", "GPU-1", 160.0), ("carol", "big", "GPU-2", 160.0)]
    assert [(r["end"], r["end_reason"]) for r in rows(db, user="carol")] == [
        (160.0, "hub restart")
    ] * 2
    assert [(r["end"], r["end_reason"]) for r in rows(db, user="dave")] == [(100.0, "crashed")]
    assert [(r["end"], r["last_seen"]) for r in rows(db, user="alice")] == [(None, 260.0)]


def test_reconcile_never_closes_the_rows_of_kept_servers(db):
    # stopping while the list was read: not in it, its end is the stop's
    db.record(hold("alice", ["GPU-0"]), 100.0)
    # started again with other GPUs: its new container is in the list
    db.record(hold("bob", ["GPU-1"]), 100.0)
    running = [hold("bob", ["GPU-2"], start=140.0), hold("erin", ["GPU-3"], start=140.0)]
    closed = db.reconcile(
        running,
        keep={("alice", ""), ("bob", ""), ("erin", "")},
        listed_at=150.0,
        now=160.0,
        reason="crashed",
    )
    assert closed == []
    assert [(r["gpu_uuid"], r["end"], r["last_seen"]) for r in rows(db, user="alice")] == [
        ("GPU-0", None, 100.0)
    ]
    # what runs is recorded, kept or not: bob's old GPU closed as the new container replaced it,
    # erin's opened
    assert [(r["gpu_uuid"], r["end"]) for r in rows(db, user="bob")] == [
        ("GPU-1", 160.0),
        ("GPU-2", None),
    ]
    assert [(r["gpu_uuid"], r["start"], r["last_seen"]) for r in rows(db, user="erin")] == [
        ("GPU-3", 140.0, 160.0)
    ]


def test_reconcile_does_not_reopen_a_server_stopped_after_the_listing(db):
    db.record(hold("alice", ["GPU-0"]), 100.0)
    listed_at = 150.0
    db.close("alice", "", "stopped", 155.0)  # stopped while the round's list was in flight
    closed = db.reconcile(
        [hold("alice", ["GPU-0"], start=90.0)],
        keep=(),
        listed_at=listed_at,
        now=160.0,
        reason="crashed",
    )
    assert closed == []
    assert [(r["end"], r["end_reason"], r["last_seen"]) for r in rows(db, user="alice")] == [
        (155.0, "stopped", 155.0)
    ]
    # stopped at the very time of the listing: the same
    db.record(hold("bob", ["GPU-1"]), 100.0)
    db.close("bob", "", "stopped", 200.0)
    db.reconcile([hold("bob", ["GPU-1"])], keep=(), listed_at=200.0, now=210.0, reason="crashed")
    assert open_rows(db) == []


def test_reconcile_does_not_close_a_server_started_after_the_listing(db):
    listed_at = 150.0
    db.record(hold("alice", ["GPU-0"]), 155.0)  # started while the list was in flight: not in it
    db.record(hold("bob", ["GPU-1"]), 150.0)  # the very time of the listing: not before it either
    closed = db.reconcile([], keep=(), listed_at=listed_at, now=160.0, reason="crashed")
    assert closed == []
    assert [(r["end"], r["last_seen"]) for r in rows(db, user="alice")] == [(None, 155.0)]
    assert [r["end"] for r in rows(db, user="bob")] == [None]
    # the next round, listed after the start, does close it when it is gone
    closed = db.reconcile([], keep=(), listed_at=300.0, now=310.0, reason="crashed")
    assert sorted(closed) == [("alice", "", "GPU-0", 155.0), ("bob", "", "GPU-1", 150.0)]


def test_reconcile_does_not_close_a_server_whose_gpus_changed_after_the_listing(db):
    db.record(hold("alice", ["GPU-0"]), 100.0)
    db.record(hold("alice", ["GPU-1"]), 155.0)  # restarted on another GPU after the listing at 150
    closed = db.reconcile([], keep=(), listed_at=150.0, now=160.0, reason="crashed")
    assert closed == []
    assert [(r["gpu_uuid"], r["end"]) for r in rows(db, user="alice")] == [
        ("GPU-0", 155.0),
        ("GPU-1", None),
    ]


# ---- reads ---------------------------------------------------------------------------------------
def usage_fixture(db):
    """alice: ml GPU-0 [100, 200), ml GPU-1 [150, open), cv shared half of GPU-2 [0, 400); bob: ml
    [100, 300); carol: ml [1000, open) starts after the windows asked about."""
    db.record(hold("alice", ["GPU-0"], start=100.0), 100.0)
    db.record(hold("alice", ["GPU-1"], server="two", start=150.0), 150.0)
    db.record(hold("alice", ["GPU-2"], server="cv", course="cv", share=0.5, start=0.0), 0.0)
    db.close("alice", "", "stopped", 200.0)
    db.close("alice", "cv", "stopped", 400.0)
    db.record(hold("bob", ["GPU-3"], start=100.0), 100.0)
    db.close("bob", "", "exited", 300.0)
    db.record(hold("carol", ["GPU-4"], start=1000.0), 1000.0)


def test_gpu_seconds(db):
    usage_fixture(db)
    # overlap with [120, 250): GPU-0 80 s, GPU-1 100 s (open: until now), GPU-2 130 s at half = 65 s
    assert db.gpu_seconds("alice", since=120.0, now=250.0) == pytest.approx(245.0)
    assert db.gpu_seconds("alice", since=120.0, now=250.0, course="ml") == pytest.approx(180.0)
    assert db.gpu_seconds("alice", since=120.0, now=250.0, course="cv") == pytest.approx(65.0)
    assert db.gpu_seconds("alice", since=120.0, now=250.0, course="nlp") == 0.0
    # after GPU-0 ended: only the open row and the shared one
    assert db.gpu_seconds("alice", since=300.0, now=500.0) == pytest.approx(200.0 + 50.0)
    # an open row counts until now, not beyond
    assert db.gpu_seconds("alice", since=150.0, now=151.0, course="ml") == pytest.approx(1.0 + 1.0)
    # a window before anything, and a row starting after now
    assert db.gpu_seconds("bob", since=0.0, now=100.0) == 0.0
    assert db.gpu_seconds("bob", since=0.0, now=1000.0) == pytest.approx(200.0)
    assert db.gpu_seconds("carol", since=0.0, now=1000.0) == 0.0
    assert db.gpu_seconds("carol", since=0.0, now=1010.0) == pytest.approx(10.0)
    assert db.gpu_seconds("nobody", since=0.0, now=1e9) == 0.0


def test_totals_per_user_and_course(db):
    usage_fixture(db)
    got = db.totals(since=0.0, now=500.0)
    # alice ml: 100 + 350 = 450 s; alice cv: 400 * 0.5 = 200 s; bob ml: 200 s; carol: not started
    # yet
    assert [(r["user"], r["course"]) for r in got] == [
        ("alice", "ml"),
        ("alice", "cv"),
        ("bob", "ml"),
    ]
    assert [r["gpu_hours"] for r in got] == pytest.approx([450 / 3600, 200 / 3600, 200 / 3600])
    ml = db.totals(since=0.0, now=500.0, course="ml")
    assert [(r["user"], r["gpu_hours"]) for r in ml] == [
        ("alice", pytest.approx(450 / 3600)),
        ("bob", pytest.approx(200 / 3600)),
    ]
    # only the part after since
    late = db.totals(since=250.0, now=2000.0)
    assert {(r["user"], r["course"]): r["gpu_hours"] for r in late} == {
        ("alice", "ml"): pytest.approx(1750 / 3600),
        ("alice", "cv"): pytest.approx(75 / 3600),
        ("bob", "ml"): pytest.approx(50 / 3600),
        ("carol", "ml"): pytest.approx(1000 / 3600),
    }
    assert db.totals(since=5000.0, now=6000.0, course="cv") == []


def test_totals_ties_are_sorted_by_user_then_course(db):
    for user, course in (("erin", "b"), ("dan", "z"), ("erin", "a"), ("dan", "a")):
        db.record(hold(user, ["GPU-0"], server=course, course=course, start=0.0), 0.0)
        db.close(user, course, "stopped", 360.0)
    db.record(hold("zed", ["GPU-1"], start=0.0), 0.0)
    db.close("zed", "", "stopped", 720.0)
    got = db.totals(since=0.0, now=1000.0)
    assert [(r["user"], r["course"], r["gpu_hours"]) for r in got] == [
        ("zed", "ml", 0.2),
        ("dan", "a", 0.1),
        ("dan", "z", 0.1),
        ("erin", "a", 0.1),
        ("erin", "b", 0.1),
    ]


def test_grants_are_summed_per_user_course_and_week(db):
    week, next_week = 1_700_000_000.0, 1_700_604_800.0
    db.grant("alice", 2.0, week, "admin", now=week + 10)
    db.grant("alice", 1.5, week, "root", now=week + 20)
    db.grant("alice", 3.0, week, "admin", now=week + 30, course="ml")
    db.grant("alice", 7.0, next_week, "admin", now=next_week + 40)
    db.grant("bob", 0.25, week, "admin", now=week + 50)
    # counted by when they were granted: a CLI in another time zone still lands in the hub's week
    db.grant("alice", 0.5, week - 3600, "admin", now=week + 60)
    assert db.granted_hours("alice", week, next_week) == pytest.approx(4.0)
    assert db.granted_hours("alice", week, next_week, course="ml") == pytest.approx(3.0)
    assert db.granted_hours("alice", week, next_week, course="cv") == 0.0
    assert db.granted_hours("alice", next_week, next_week + 604_800) == pytest.approx(7.0)
    assert db.granted_hours("bob", week, next_week) == pytest.approx(0.25)
    assert db.granted_hours("carol", week, next_week) == 0.0
    assert isinstance(db.granted_hours("carol", week, next_week), float)


def test_grant_refuses_what_the_hub_would_never_read(tmp_path, capsys):
    from jupyter_gpuspawn.cli import main
    from jupyter_gpuspawn.usage import UsageDB

    # no -f / --db: it would write a database the hub never reads
    assert main(["grant", "alice", "1"]) == 2
    assert "-f /path/to/jupyterhub_config.py" in capsys.readouterr().err
    courses = tmp_path / "courses"
    courses.mkdir()
    (courses / "dl.yaml").write_text("id: dl\ntitle: DL\nimages: [{key: k, image: 'img:1'}]\n")
    db_url = f"sqlite:///{tmp_path / 'usage.sqlite'}"
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(
        f"c.GPUDockerSpawner.courses_dir = {str(courses)!r}\n"
        f"c.GPUDockerSpawner.usage_db_url = {db_url!r}\n"
    )
    assert main(["grant", "alice", "1", "-f", str(config)]) == 2
    assert "budgets are per course: add --course (one of dl)" in capsys.readouterr().err
    assert main(["grant", "alice", "1", "-f", str(config), "--course", "dk"]) == 2
    assert "no course 'dk'" in capsys.readouterr().err
    # float() reads "inf" and "nan": an endless grant would lift the budget for good
    for hours in ("inf", "Infinity", "nan", "0", "-1"):
        assert main(["grant", "alice", hours, "-f", str(config), "--course", "dl"]) == 2, hours
        assert "HOURS must be a finite number of hours more than 0" in capsys.readouterr().err
    assert main(["grant", "alice", "1.5", "-f", str(config), "--course", "dl", "--by", "prof"]) == 0
    assert "alice: 1.5 extra GPU-hours in course dl this week" in capsys.readouterr().out
    db = UsageDB(db_url)
    assert db.granted_hours("alice", 0, 4e9, course="dl") == 1.5  # none of the refused ones
    db.dispose()


# ---- crash safety --------------------------------------------------------------------------------
KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from jupyter_gpuspawn.usage import Hold, UsageDB
    db = UsageDB(sys.argv[1])
    db.record(Hold("alice", "", "ml", ("GPU-0", "GPU-1")), 1000.0)
    db.record(Hold("bob", "lab", "ml", ("GPU-2",), 0.5), 1010.0)
    db.reconcile([Hold("alice", "", "ml", ("GPU-0", "GPU-1")),
                  Hold("bob", "lab", "ml", ("GPU-2",), 0.5)],
                 (), 1100.0, 1200.0, "crashed")
    db.record(Hold("carol", "", "cv", ("GPU-3",)), 1300.0)
    import jupyter_gpuspawn
    print("written", jupyter_gpuspawn.__file__, flush=True)
    time.sleep(120)  # killed here, with its connections open and nothing closed or checkpointed
""")


def test_records_survive_a_writer_killed_with_sigkill(path):
    url = f"sqlite:///{path}"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("written"), proc.stderr.read() if proc.poll() is not None else line
        assert line.split()[1].startswith(PACKAGE_ROOT)  # the child ran the code under test
        wal = path.with_name(path.name + "-wal")
        # the records are in the WAL, never checkpointed
        assert wal.exists() and wal.stat().st_size > 0
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    db = UsageDB(url)
    try:
        assert sorted((r["user"], r["gpu_uuid"], r["last_seen"]) for r in open_rows(db)) == [
            ("alice", "GPU-0", 1200.0),
            ("alice", "GPU-1", 1200.0),
            ("bob", "GPU-2", 1200.0),
            ("carol", "GPU-3", 1300.0),
        ]
        # the restarted hub's first round: bob's container still runs, the others are gone
        closed = db.reconcile(
            [Hold("bob", "lab", "ml", ("GPU-2",), 0.5)],
            keep=(),
            listed_at=2000.0,
            now=2001.0,
            reason="hub restart",
        )
        assert sorted(closed) == [
            ("alice", "", "GPU-0", 1200.0),
            ("alice", "", "GPU-1", 1200.0),
            ("carol", "", "GPU-3", 1300.0),
        ]
        assert {
            (r["user"], r["end"], r["end_reason"]) for r in rows(db) if r["end"] is not None
        } == {("alice", 1200.0, "hub restart"), ("carol", 1300.0, "hub restart")}
        assert [(r["user"], r["last_seen"], r["start"]) for r in open_rows(db)] == [
            ("bob", 2001.0, 1010.0)
        ]
        totals = {(r["user"], r["course"]): r["gpu_hours"] for r in db.totals(0.0, 2001.0)}
        assert totals == {
            ("alice", "ml"): pytest.approx(400 / 3600),
            ("carol", "cv"): 0.0,
            ("bob", "ml"): pytest.approx(991 * 0.5 / 3600),
        }
    finally:
        db.dispose()


# ---- the `jupyter-gpuspawn usage` command --------------------------------------------------------
def cli_command() -> list:
    script = Path(sys.executable).parent / "jupyter-gpuspawn"
    return [str(script)] if script.exists() else [sys.executable, "-m", "jupyter_gpuspawn.cli"]


def run_cli(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_command() + ["usage", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
    )


SINCE = "2020-01-01"


def cli_fixture(db, now: float):
    """Closed rows an hour and more ago (exact totals), one open row (grows with the clock), a row
    with no course, and one before --since."""
    since = dt.datetime(2020, 1, 1).timestamp()
    db.record(hold("alice", ["GPU-0", "GPU-1"], start=now - 7200), now - 7200)
    db.close("alice", "", "stopped", now - 3600)  # 2 GPU-hours, ml
    db.record(hold("bob", ["GPU-2"], course="cv", share=0.25, start=now - 4 * 3600), now - 4 * 3600)
    db.close("bob", "", "crashed", now)  # 1 GPU-hour, cv
    # open: 0.5 and growing
    db.record(hold("carol", ["GPU-3"], course="", start=now - 1800), now - 1800)
    db.record(hold("dave", ["GPU-4"], start=since - 7200), since - 7200)
    db.close("dave", "", "stopped", since - 3600)  # before --since: not counted


def test_cli_usage_formats_match_totals(db, path):
    now = time.time()
    cli_fixture(db, now)
    since = dt.datetime(2020, 1, 1).timestamp()
    url = f"sqlite:///{path}"

    result = run_cli("--db", url, "--since", SINCE, "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["since"] == since
    expected = db.totals(since, data["until"])
    assert [(r["user"], r["course"]) for r in data["rows"]] == [
        ("alice", "ml"),
        ("bob", "cv"),
        ("carol", ""),
    ]
    assert [(r["user"], r["course"]) for r in data["rows"]] == [
        (r["user"], r["course"]) for r in expected
    ]
    assert [r["gpu_hours"] for r in data["rows"]] == pytest.approx(
        [r["gpu_hours"] for r in expected]
    )
    assert [r["gpu_hours"] for r in data["rows"][:2]] == pytest.approx([2.0, 1.0])
    assert data["rows"][2]["gpu_hours"] == pytest.approx(0.5 + (data["until"] - now) / 3600)

    result = run_cli("--db", url, "--since", SINCE, "--format", "csv")
    assert result.returncode == 0, result.stderr
    table = list(csv.reader(io.StringIO(result.stdout)))
    assert table[0] == ["user", "course", "gpu_hours"]
    assert [row[:2] for row in table[1:]] == [["alice", "ml"], ["bob", "cv"], ["carol", ""]]
    assert table[1][2] == "2.0000" and table[2][2] == "1.0000"
    assert float(table[3][2]) == pytest.approx(0.5, abs=0.02)

    result = run_cli("--db", url, "--since", SINCE)  # table, the default
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "GPU-hours since 2020-01-01 00:00"
    assert lines[1].split() == ["USER", "COURSE", "GPU-HOURS"]
    assert [line.split() for line in lines[2:4]] == [["alice", "ml", "2.00"], ["bob", "cv", "1.00"]]
    assert lines[4].split()[:2] == ["carol", "-"]  # no course
    assert len(lines) == 5

    result = run_cli("--db", url, "--since", SINCE, "--course", "cv", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rows"] == [
        {"user": "bob", "course": "cv", "gpu_hours": pytest.approx(1.0)}
    ]
    result = run_cli("--db", url, "--since", SINCE, "--course", "nlp")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "(no GPU use recorded)"


def test_cli_usage_defaults_to_this_week(db, path):
    from jupyter_gpuspawn.budget import describe, week_start

    db.record(hold("alice", ["GPU-0"], start=time.time() - 60), time.time() - 60)
    before = week_start(time.time())
    result = run_cli("--db", f"sqlite:///{path}", "--format", "json")
    after = week_start(time.time())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["since"] in (before, after)
    result = run_cli("--db", f"sqlite:///{path}")
    assert result.returncode == 0, result.stderr
    assert (
        f"(this week, from {describe(before)})" in result.stdout.splitlines()[0]
        or f"(this week, from {describe(after)})" in result.stdout.splitlines()[0]
    )


def test_cli_usage_refuses_a_bad_since(db, path):
    db.ensure_schema()
    result = run_cli("--db", f"sqlite:///{path}", "--since", "last tuesday")
    assert result.returncode != 0
    assert (
        "--since must be a date like 2026-11-23 or 2026-11-23T08:00, got 'last tuesday'"
        in result.stderr
    )
    assert result.stdout == ""


def test_cli_reads_while_the_hub_holds_a_write_transaction(db, path):
    now = time.time()
    cli_fixture(db, now)
    url = f"sqlite:///{path}"
    with db.engine.connect() as conn:
        # the hub mid-write: without WAL this locks readers out
        conn.exec_driver_sql("BEGIN EXCLUSIVE")
        conn.execute(
            usage_table.insert().values(
                user="zoe",
                server="",
                course="ml",
                gpu_uuid="GPU-9",
                node="",
                # 0.75 h
                share=1.0,
                start=now - 2700,
                end=now,
                last_seen=now,
            )
        )
        started = time.monotonic()
        result = run_cli("--db", url, "--since", SINCE, "--format", "json")
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        users = [r["user"] for r in json.loads(result.stdout)["rows"]]
        assert users == ["alice", "bob", "carol"]  # the uncommitted row is not seen
        conn.commit()
    assert elapsed < 30
    result = run_cli("--db", url, "--since", SINCE, "--format", "json")
    assert result.returncode == 0, result.stderr
    # zoe 0.75 h, carol 0.5 h and growing
    assert [r["user"] for r in json.loads(result.stdout)["rows"]] == [
        "alice",
        "bob",
        "zoe",
        "carol",
    ]


def test_hub_writes_while_a_reader_holds_a_read_transaction(db, path):
    db.record(hold("alice", ["GPU-0"]), 100.0)
    reader = UsageDB(f"sqlite:///{path}")
    try:
        with reader.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN")  # a slow `usage` report mid-read
            assert (
                conn.execute(sa.select(sa.func.count()).select_from(usage_table)).scalar_one() == 1
            )
            started = time.monotonic()
            db.record(hold("bob", ["GPU-1"]), 200.0)  # must not wait for the reader
            db.close("alice", "", "stopped", 300.0)
            assert time.monotonic() - started < 4  # below the 5 s busy timeout
            # the reader keeps its snapshot
            assert (
                conn.execute(sa.select(sa.func.count()).select_from(usage_table)).scalar_one() == 1
            )
            conn.rollback()
        assert len(reader.records()) == 2
    finally:
        reader.dispose()


# ---- course changes ------------------------------------------------------------------------------
REV_A, REV_B = "a" * 64, "0123456789abcdef" * 4


def test_course_change_round_trip(db):
    db.record_course_change("ml", "prof", "created", ["new course", "2 images"], REV_A, 1000.0)
    assert db.course_changes("ml") == [
        {
            "course": "ml",
            "user": "prof",
            "at": 1000.0,
            "action": "created",
            "summary": ["new course", "2 images"],
            "revision": REV_A,
        }
    ]
    assert db.course_changes("other") == []


def test_course_changes_newest_first_and_limited(db):
    db.record_course_change("ml", "prof", "created", ["new course"], REV_A, 1000.0)
    db.record_course_change("ml", "ta", "enrolled", ["+bob"], "", 3000.0)
    db.record_course_change("ml", "prof", "edited", ["gpus: 1 -> 2"], REV_B, 2000.0)
    # same time: the later recorded first
    db.record_course_change("ml", "ta", "unenrolled", ["-bob"], "", 3000.0)
    db.record_course_change("cv", "other", "created", [], REV_A, 5000.0)
    assert [c["action"] for c in db.course_changes("ml")] == [
        "unenrolled",
        "enrolled",
        "edited",
        "created",
    ]
    assert [c["action"] for c in db.course_changes("ml", limit=2)] == ["unenrolled", "enrolled"]
    assert [c["summary"] for c in db.course_changes("cv")] == [[]]


def test_change_for_revision_is_the_newest_that_wrote_it(db):
    db.record_course_change("ml", "prof", "edited", ["title"], REV_A, 1000.0)
    db.record_course_change("ml", "ta", "edited", ["title back"], REV_B, 2000.0)
    # the same bytes again
    db.record_course_change("ml", "prof2", "restored", ["restored"], REV_A, 3000.0)
    db.record_course_change("ml", "ta", "enrolled", ["+bob"], "", 4000.0)
    assert db.change_for_revision("ml", REV_A)["user"] == "prof2"
    assert db.change_for_revision("ml", REV_B)["user"] == "ta"
    assert db.change_for_revision("cv", REV_A) is None  # another course with the same file text
    assert db.change_for_revision("ml", "f" * 64) is None  # written on the hub host
    assert db.change_for_revision("ml", "") is None  # enrolments wrote no file


@pytest.mark.parametrize(
    "action, summary, revision",
    [
        ("deleted", ["gone"], REV_A),  # unknown action
        ("", [], ""),
        ("edited", "title", REV_A),  # a bare string, not a list of them
        ("edited", [3], REV_A),
        ("edited", ["title"], "abc"),  # not a sha256
        ("edited", ["title"], "A" * 64),
    ],
)
def test_bad_course_changes_are_refused(db, action, summary, revision):
    with pytest.raises(ValueError):
        db.record_course_change("ml", "prof", action, summary, revision, 1000.0)
    assert db.course_changes("ml") == []
