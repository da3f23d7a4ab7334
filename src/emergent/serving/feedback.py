"""The feedback store: labelled examples sent to `POST /v1/<task>/feedback`, one row each.

A labelled example is kept as sent (its sender chose to label it, and a label is only worth
what its text is), unlike a prediction, of which the request store keeps features only.
By default the table lives in the request store's SQLite file (WAL, like `predictions`); with
`serve.store.feedback_uri: postgresql://...` it lives in PostgreSQL (psycopg v3), so several
service processes and the team's machines share one store.

Every request is one transaction: all its examples are stored, or none. `sha256` is the hash of
the canonical JSON of the example's task fields (sorted keys, no request id), so the exporter
can de-duplicate and split by content (`emergent.commands.feedback`).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COLUMNS = ("ts", "task", "model_version", "request_id", "key_id", "example", "sha256")

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL, task TEXT NOT NULL, model_version TEXT, request_id TEXT, key_id TEXT,
    example TEXT NOT NULL, sha256 TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_task_id ON feedback (task, id);
"""

POSTGRES_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS feedback (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL, task TEXT NOT NULL, model_version TEXT, request_id TEXT,
    key_id TEXT, example TEXT NOT NULL, sha256 TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS feedback_task_id ON feedback (task, id)",
)


class FeedbackStoreError(RuntimeError):
    """The store cannot be opened or written: one line naming where it is."""


def content_hash(example: Mapping[str, Any], fields: Sequence[str]) -> str:
    """Hex sha256 of the canonical JSON of the example's `fields` (sorted keys, compact,
    UTF-8): the same content always hashes alike, whoever sent it and whichever request id
    it carried."""
    canonical = json.dumps(
        {name: example[name] for name in fields},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Feedback:
    """One stored labelled example."""

    id: int
    ts: float
    task: str
    model_version: str | None
    request_id: str | None
    key_id: str | None
    example: dict[str, Any]  # the task fields, as sent
    sha256: str


@dataclass(frozen=True)
class NewFeedback:
    """An example to store (the store gives it its id)."""

    ts: float
    task: str
    model_version: str | None
    request_id: str | None
    key_id: str | None
    example: dict[str, Any]
    sha256: str

    def values(self) -> tuple[Any, ...]:
        example = json.dumps(self.example, ensure_ascii=False)
        return (self.ts, self.task, self.model_version, self.request_id, self.key_id, example,
                self.sha256)  # fmt: skip


def is_db_error(err: BaseException) -> bool:
    """An error of either database driver (psycopg is imported only where it is used)."""
    if isinstance(err, sqlite3.Error):
        return True
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(err, psycopg.Error)


def is_postgres(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith(("postgresql://", "postgres://"))


class FeedbackStore:
    """The `feedback` table on SQLite (a file) or PostgreSQL (a URI), behind one small API.

    One connection, used under a lock: the service calls it from worker threads."""

    def __init__(self, where: str | Path) -> None:
        self.where = str(where)
        self.postgres = is_postgres(self.where)
        self.lock = threading.Lock()
        self.conn: Any = None
        self.connect()

    @classmethod
    def open(cls, uri: str | None, sqlite_path: Path) -> FeedbackStore:
        """The configured store: PostgreSQL at `uri`, else the SQLite file `sqlite_path`."""
        if uri and not is_postgres(uri):
            raise FeedbackStoreError(
                f"serve.store.feedback_uri={uri!r}: use postgresql://... or null (SQLite)"
            )
        return cls(uri if uri else sqlite_path)

    @property
    def mark(self) -> str:
        return "%s" if self.postgres else "?"

    def describe(self) -> str:
        """Where the store is, without a password."""
        if not self.postgres:
            return self.where
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(self.where)
        return f"postgresql://{info.get('host', '')}:{info.get('port', '')}/{info.get('dbname')}"

    def connect(self) -> None:
        self.conn = self.connect_postgres() if self.postgres else self.connect_sqlite()

    def connect_postgres(self) -> Any:
        import psycopg

        try:
            # autocommit: a read leaves no transaction open; writes open one (`add`)
            conn = psycopg.connect(self.where, connect_timeout=10, autocommit=True)
            with conn.transaction():
                for statement in POSTGRES_SCHEMA:
                    conn.execute(statement)
        except psycopg.Error as err:
            raise FeedbackStoreError(f"feedback store {self.describe()}: {err}") from err
        return conn

    def connect_sqlite(self) -> sqlite3.Connection:
        path = Path(self.where)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL, as the predictions table
            conn.executescript(SQLITE_SCHEMA)
        except (sqlite3.Error, OSError) as err:
            raise FeedbackStoreError(f"feedback store {path}: {err}") from err
        return conn

    @contextmanager
    def using(self) -> Iterator[Any]:
        """The connection, to one caller at a time, re-opened when PostgreSQL dropped it (a
        server restart). A database error becomes one FeedbackStoreError line: its first line
        only, since PostgreSQL's DETAIL line quotes the failing row, and an example is never
        logged."""
        with self.lock:
            try:
                if self.postgres and (self.conn.closed or self.conn.broken):
                    self.connect()
                yield self.conn
            except Exception as err:
                if not is_db_error(err):
                    raise
                reason = (str(err).splitlines() or [""])[0]
                raise FeedbackStoreError(
                    f"feedback store {self.describe()}: {type(err).__name__}: {reason}"
                ) from err

    def add(self, rows: Sequence[NewFeedback]) -> list[int]:
        """Store `rows` in one transaction (all or none); their ids, in order."""
        sql = (
            f"INSERT INTO feedback ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join([self.mark] * len(COLUMNS))}) RETURNING id"
        )
        with self.using() as conn:
            if self.postgres:
                with conn.transaction():
                    return [int(conn.execute(sql, r.values()).fetchone()[0]) for r in rows]
            with conn:  # sqlite3: commit on success, roll back on any error
                return [int(conn.execute(sql, r.values()).fetchone()[0]) for r in rows]

    def examples(self, task: str) -> list[Feedback]:
        """Every stored example of `task`, in the order they arrived (by id)."""
        sql = f"SELECT id, {', '.join(COLUMNS)} FROM feedback WHERE task = {self.mark} ORDER BY id"
        with self.using() as conn:
            rows = conn.execute(sql, (task,)).fetchall()
        return [
            Feedback(int(r[0]), float(r[1]), r[2], r[3], r[4], r[5], json.loads(r[6]), r[7])
            for r in rows
        ]

    def count(self, task: str | None = None) -> int:
        args: tuple[str, ...]
        sql, args = "SELECT COUNT(*) FROM feedback", ()
        if task is not None:
            sql, args = f"{sql} WHERE task = {self.mark}", (task,)
        with self.using() as conn:
            return int(conn.execute(sql, args).fetchone()[0])

    def close(self) -> None:
        with self.lock:
            if self.conn is not None:
                self.conn.close()


def in_test(sha256: str, test_percent: int) -> bool:
    """The split of an example, from its content alone: it never changes as more arrive."""
    return int(sha256[:8], 16) % 100 < test_percent


def split_examples(
    rows: Sequence[Feedback], fields: Sequence[str], test_percent: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, test) examples in the task's shape (`fields` only), de-duplicated by content
    hash (the first sent wins) and in the order they arrived."""
    seen: set[str] = set()
    train: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    for row in sorted(rows, key=lambda r: r.id):
        if row.sha256 in seen:
            continue
        seen.add(row.sha256)
        example = {name: row.example[name] for name in fields}
        (test if in_test(row.sha256, test_percent) else train).append(example)
    return train, test
