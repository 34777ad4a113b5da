"""GPU usage records: who held which GPU, from when to when, and why it ended (SQLAlchemy, blocking
calls).

One row per GPU of an assignment: user, server, course, GPU UUID, node (empty on one host), the
share of the GPU the server held (1, or 1/n of a GPU shared by n), start, end, the last time the hub
saw its container running, and why it ended. GPU-hours of a row: (end - start) / 3600 * share.

Course changes (schema version 2): who created, edited, archived, restored a course or changed its
students, when, a short summary of what changed, and the revision (sha256, see course_store.py) of
the file the change wrote, so the instructors' page can show a course's history and who wrote the
version an editor is looking at.

Crash safety: a row is written when the server starts and closed when it stops. A hub killed with -9
leaves rows open; the reconcile keeps ``last_seen`` fresh for every running container and, after a
restart, closes rows whose container is gone with the time it last saw it (reason "hub restart"), so
a record is never lost and never runs on. The reconcile also opens rows for running containers that
have none (a hub upgraded while servers ran, a write that failed): the containers' labels are the
truth, the database follows them.

Schema versions live in the ``gpuspawn_meta`` table (``schema_version``); :data:`MIGRATIONS`
upgrades an older database in place on first use, in one transaction per step. Tables are created
when missing.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

SCHEMA_VERSION = 2
END_REASONS = ("stopped", "exited", "crashed", "reclaimed idle", "budget", "hub restart")
COURSE_CHANGE_ACTIONS = ("created", "edited", "archived", "restored", "enrolled", "unenrolled")
REVISION_LENGTH = 64  # sha256 hex

# epoch seconds need a double: MySQL's FLOAT is 4 bytes (epoch seconds rounded to 2 minutes)
EPOCH = sa.Float(precision=53)

metadata = sa.MetaData()
meta_table = sa.Table(
    "gpuspawn_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)
usage_table = sa.Table(
    "gpuspawn_gpu_usage",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user", sa.String(255), nullable=False),
    sa.Column("server", sa.String(255), nullable=False, default=""),
    sa.Column("course", sa.String(255), nullable=False, default=""),
    sa.Column("gpu_uuid", sa.String(128), nullable=False),
    sa.Column("node", sa.String(255), nullable=False, default=""),
    sa.Column("share", sa.Float, nullable=False, default=1.0),
    sa.Column("start", EPOCH, nullable=False),
    sa.Column("end", EPOCH, nullable=True),  # NULL while the server runs
    sa.Column("last_seen", EPOCH, nullable=False),
    sa.Column("end_reason", sa.String(32), nullable=True),
    sa.Index("ix_gpuspawn_usage_open", "end", "user", "server"),
    sa.Index("ix_gpuspawn_usage_user_start", "user", "start"),
    sa.Index("ix_gpuspawn_usage_user_end", "user", "end"),
)
grants_table = sa.Table(
    "gpuspawn_budget_grants",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user", sa.String(255), nullable=False),
    # "" = the user's spawner-wide budget
    sa.Column("course", sa.String(255), nullable=False, default=""),
    sa.Column("week_start", EPOCH, nullable=False),
    sa.Column("hours", sa.Float, nullable=False),
    sa.Column("granted_by", sa.String(255), nullable=False, default=""),
    sa.Column("granted_at", EPOCH, nullable=False),
)
course_changes_table = sa.Table(  # schema version 2
    "gpuspawn_course_changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("course", sa.String(255), nullable=False),
    sa.Column("user", sa.String(255), nullable=False),
    sa.Column("at", EPOCH, nullable=False),
    sa.Column("action", sa.String(32), nullable=False),  # one of COURSE_CHANGE_ACTIONS
    # JSON list of short strings: what changed
    sa.Column("summary", sa.Text, nullable=False, default="[]"),
    # "" = no file written
    sa.Column("revision", sa.String(REVISION_LENGTH), nullable=False, default=""),
    sa.Index("ix_gpuspawn_course_changes_course_at", "course", "at"),
)


def _add_course_changes(conn) -> None:
    """Version 2: the course change history (a new table, its index with it)."""
    course_changes_table.create(conn, checkfirst=True)


# version -> callable(connection) that upgrades a database at version-1 to it. A new database gets
# every table of
# ``metadata`` at once and starts at SCHEMA_VERSION, so these only run on databases an older release
# created.
MIGRATIONS: dict[int, object] = {2: _add_course_changes}

ServerKey = tuple[str, str]


@dataclass(frozen=True)
class Hold:
    """A running server's GPUs as the usage records see them."""

    user: str
    server: str
    course: str
    gpus: tuple[str, ...]
    share: float = 1.0
    node: str = ""
    start: float | None = None  # when it began, if known (a container's creation time); else "now"

    @property
    def key(self) -> ServerKey:
        return (self.user, self.server)


class UsageError(RuntimeError):
    pass


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=5000")
    # WAL: the admin's `jupyter-gpuspawn usage` reads while the hub writes; a committed transaction
    # survives the hub's process being killed (kill -9), which is what the records must survive
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


class UsageDB:
    """The usage records of one database URL. Every method blocks: the hub calls them in one worker
    thread."""

    def __init__(self, url: str, create: bool = True):
        """``create=False``: only read (the admin's reports): a missing SQLite file is a UsageError,
        not a new empty database, and no table is created."""
        self.url = url
        self.create = create
        if not create and url.startswith("sqlite:///"):
            path = url[len("sqlite:///") :].split("?", 1)[0]
            if path and path != ":memory:" and not os.path.exists(path):
                raise UsageError(
                    f"no usage records at {path} (wrong path, or the hub has not run with GPUs yet)"
                )
        self.engine = sa.create_engine(url, future=True, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._ready = False
        self._lock = threading.Lock()

    # ---- schema ----------------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        with self._lock:
            if self._ready:
                return
            version = self._stored_version()
            if version is not None and version > SCHEMA_VERSION:
                raise UsageError(
                    f"the usage database {self.url} has schema version {version}, newer than this "
                    f"jupyter-gpuspawn's ({SCHEMA_VERSION}); upgrade jupyter-gpuspawn"
                )
            if not self.create:
                self._ready = version == SCHEMA_VERSION
                if version is None:
                    raise UsageError(f"no usage records in {self.url} yet")
                if version < SCHEMA_VERSION:
                    raise UsageError(
                        f"the usage database {self.url} is at schema version {version}; the hub "
                        "upgrades it when it next starts"
                    )
                return
            if version is None:
                with self.engine.begin() as conn:
                    metadata.create_all(conn)
                try:
                    with self.engine.begin() as conn:
                        conn.execute(
                            meta_table.insert().values(
                                key="schema_version", value=str(SCHEMA_VERSION)
                            )
                        )
                except sa.exc.IntegrityError:
                    pass  # another process (the CLI, a second hub) created it at the same moment
                version = self._stored_version()
            for step in range(version + 1, SCHEMA_VERSION + 1):
                with self.engine.begin() as conn:
                    MIGRATIONS[step](conn)
                    conn.execute(
                        meta_table.update()
                        .where(meta_table.c.key == "schema_version")
                        .values(value=str(step))
                    )
            self._ready = True

    def _stored_version(self) -> int | None:
        if not sa.inspect(self.engine).has_table(meta_table.name):
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
            ).first()
        return int(row[0]) if row else None

    def schema_version(self) -> int:
        self.ensure_schema()
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
                ).scalar_one()
            )

    # ---- writes ----------------------------------------------------------------------------------
    def record(self, hold: Hold, now: float) -> None:
        """Record that ``hold``'s server holds its GPUs from now on (or from ``hold.start``).
        Idempotent: GPUs already recorded as open stay as they are; open rows of this server for
        other GPUs are closed."""
        self.ensure_schema()
        with self.engine.begin() as conn:
            self._record(conn, hold, now)

    @staticmethod
    def _record(conn, hold: Hold, now: float) -> None:
        t = usage_table
        open_rows = conn.execute(
            sa.select(t.c.id, t.c.gpu_uuid).where(
                t.c.end.is_(None), t.c.user == hold.user, t.c.server == hold.server
            )
        ).all()
        have = {uuid for _, uuid in open_rows}
        stale = [row_id for row_id, uuid in open_rows if uuid not in hold.gpus]
        if stale:
            conn.execute(t.update().where(t.c.id.in_(stale)).values(end=now, end_reason="stopped"))
        start = min(hold.start, now) if hold.start else now
        if len(have) < len(hold.gpus):
            # a container started again (docker start, a restart policy) keeps its creation time:
            # never count again what an earlier record of this server already covers
            latest = conn.execute(
                sa.select(sa.func.max(t.c.end)).where(
                    t.c.user == hold.user, t.c.server == hold.server
                )
            ).scalar()
            if latest is not None:
                start = max(start, min(latest, now))
        new = [
            dict(
                user=hold.user,
                server=hold.server,
                course=hold.course,
                gpu_uuid=uuid,
                node=hold.node,
                share=hold.share,
                start=start,
                end=None,
                last_seen=now,
                end_reason=None,
            )
            for uuid in hold.gpus
            if uuid not in have
        ]
        if new:
            conn.execute(t.insert(), new)

    def close(self, user: str, server: str, reason: str, now: float) -> int:
        """Close the server's open rows at ``now``; returns how many."""
        self.ensure_schema()
        t = usage_table
        with self.engine.begin() as conn:
            result = conn.execute(
                t.update()
                .where(t.c.end.is_(None), t.c.user == user, t.c.server == server)
                .values(end=now, end_reason=reason, last_seen=now)
            )
            return result.rowcount

    def reconcile(
        self,
        running: Sequence[Hold],
        keep: Iterable[ServerKey],
        listed_at: float,
        now: float,
        reason: str,
    ) -> list[tuple]:
        """Make the open rows equal to the holds found running when the containers were listed at
        ``listed_at``, in one transaction: rows of running servers get ``last_seen = now`` (and are
        opened where missing); open rows of servers neither running nor in ``keep`` (starting, or
        changed while the list was read) are closed at the time they were last seen, with
        ``reason``. What happened after the listing is left alone: a server stopped since (its row
        closed) is not opened again, a server started since is not closed. Returns the closed rows
        as (user, server, gpu_uuid, end)."""
        self.ensure_schema()
        t = usage_table
        keep = set(keep)
        closed = []
        with self.engine.begin() as conn:
            changed = {
                tuple(row)
                for row in conn.execute(
                    sa.select(t.c.user, t.c.server).where(t.c.end >= listed_at).distinct()
                )
            }
            running = [h for h in running if h.key not in changed]
            running_keys = {h.key for h in running}
            for hold in running:
                self._record(conn, hold, now)
            open_rows = conn.execute(
                sa.select(t.c.id, t.c.user, t.c.server, t.c.gpu_uuid, t.c.last_seen).where(
                    t.c.end.is_(None), t.c.start < listed_at
                )
            ).all()
            seen_ids = [row.id for row in open_rows if (row.user, row.server) in running_keys]
            if seen_ids:
                conn.execute(t.update().where(t.c.id.in_(seen_ids)).values(last_seen=now))
            for row in open_rows:
                key = (row.user, row.server)
                if key in running_keys or key in keep or key in changed:
                    continue
                conn.execute(
                    t.update().where(t.c.id == row.id).values(end=row.last_seen, end_reason=reason)
                )
                closed.append((row.user, row.server, row.gpu_uuid, row.last_seen))
        return closed

    def grant(
        self,
        user: str,
        hours: float,
        week_start: float,
        granted_by: str,
        now: float,
        course: str = "",
    ) -> None:
        self.ensure_schema()
        with self.engine.begin() as conn:
            conn.execute(
                grants_table.insert().values(
                    user=user,
                    course=course,
                    week_start=week_start,
                    hours=hours,
                    granted_by=granted_by,
                    granted_at=now,
                )
            )

    def record_course_change(
        self, course: str, user: str, action: str, summary: Sequence[str], revision: str, now: float
    ) -> None:
        """Record that ``user`` changed ``course`` at ``now``: ``action`` (one of
        COURSE_CHANGE_ACTIONS), what changed as a few short lines, and the revision of the file
        written ("" when none was). ValueError for an unknown action, a summary that is not a list
        of strings (a bare string would be stored letter by letter) or a revision that is not a
        sha256 hex."""
        if action not in COURSE_CHANGE_ACTIONS:
            raise ValueError(
                f"unknown course change {action!r}; expected one of "
                f"{', '.join(COURSE_CHANGE_ACTIONS)}"
            )
        if isinstance(summary, str) or not all(isinstance(line, str) for line in summary):
            raise ValueError("the summary of a course change is a list of strings")
        if revision and not re.fullmatch(f"[0-9a-f]{{{REVISION_LENGTH}}}", revision):
            raise ValueError(
                f"a course file revision is {REVISION_LENGTH} lowercase hex digits, not "
                f"{revision!r}"
            )
        self.ensure_schema()
        with self.engine.begin() as conn:
            conn.execute(
                course_changes_table.insert().values(
                    course=course,
                    user=user,
                    at=now,
                    action=action,
                    summary=json.dumps(list(summary)),
                    revision=revision,
                )
            )

    # ---- reads -----------------------------------------------------------------------------------
    def course_changes(self, course: str, limit: int = 20) -> list[dict]:
        """The ``limit`` latest changes of ``course``, newest first (ties in time: the later
        recorded first), as dicts: course, user, at, action, summary (a list), revision."""
        self.ensure_schema()
        c = course_changes_table
        query = (
            sa.select(c)
            .where(c.c.course == course)
            .order_by(c.c.at.desc(), c.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [self._change(row) for row in conn.execute(query)]

    def change_for_revision(self, course: str, revision: str) -> dict | None:
        """The newest change of ``course`` that wrote the file with ``revision`` (who wrote what an
        editor sees), or None: written on the hub host, or before changes were recorded."""
        if not revision:
            # changes that wrote no file (enrolments) have revision "": they wrote nothing
            return None
        self.ensure_schema()
        c = course_changes_table
        query = (
            sa.select(c)
            .where(c.c.course == course, c.c.revision == revision)
            .order_by(c.c.at.desc(), c.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return self._change(row) if row is not None else None

    @staticmethod
    def _change(row) -> dict:
        m = row._mapping
        return {
            "course": m["course"],
            "user": m["user"],
            "at": m["at"],
            "action": m["action"],
            "summary": json.loads(m["summary"]),
            "revision": m["revision"],
        }

    def gpu_seconds(self, user: str, since: float, now: float, course: str | None = None) -> float:
        """GPU-seconds ``user`` used from ``since`` to ``now`` (in ``course``, or in all), open rows
        until now."""
        self.ensure_schema()
        t = usage_table
        query = sa.select(t.c.start, t.c.end, t.c.share).where(
            t.c.user == user, t.c.start < now, sa.or_(t.c.end.is_(None), t.c.end > since)
        )
        if course is not None:
            query = query.where(t.c.course == course)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return sum(
            max(0.0, min(end if end is not None else now, now) - max(start, since)) * share
            for start, end, share in rows
        )

    def granted_hours(self, user: str, since: float, until: float, course: str = "") -> float:
        """Extra hours granted to ``user`` in ``course`` at a time in [since, until): the budget
        week. Counted by when they were granted, so a CLI run in another time zone than the hub
        still lands in the right week."""
        self.ensure_schema()
        g = grants_table
        with self.engine.connect() as conn:
            total = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(g.c.hours), 0.0)).where(
                    g.c.user == user,
                    g.c.course == course,
                    g.c.granted_at >= since,
                    g.c.granted_at < until,
                )
            ).scalar_one()
        return float(total)

    def records(
        self, since: float = 0.0, until: float | None = None, course: str | None = None
    ) -> list[dict]:
        """Rows overlapping [since, until), oldest first, as dicts."""
        self.ensure_schema()
        t = usage_table
        query = (
            sa.select(t)
            .where(sa.or_(t.c.end.is_(None), t.c.end > since))
            .order_by(t.c.start, t.c.id)
        )
        if until is not None:
            query = query.where(t.c.start < until)
        if course is not None:
            query = query.where(t.c.course == course)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def totals(self, since: float, now: float, course: str | None = None) -> list[dict]:
        """GPU-hours per (user, course) from ``since`` to ``now``, largest first."""
        sums: dict[tuple[str, str], float] = {}
        for row in self.records(since, now, course):
            end = row["end"] if row["end"] is not None else now
            seconds = max(0.0, min(end, now) - max(row["start"], since)) * row["share"]
            key = (row["user"], row["course"])
            sums[key] = sums.get(key, 0.0) + seconds
        return [
            {"user": u, "course": c, "gpu_hours": s / 3600}
            for (u, c), s in sorted(sums.items(), key=lambda kv: (-kv[1], kv[0]))
        ]

    def dispose(self) -> None:
        self.engine.dispose()
