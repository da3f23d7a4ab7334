"""The request store: per prediction its features (never the raw text) in SQLite, WAL mode.

WAL with one writer thread: every batch is one transaction, so a kill -9 loses at most the
records not yet committed and never corrupts the file (the next open replays or drops the WAL).
The optional `masked_text` column holds sampled texts only after masking.
The same file holds the `feedback` table (`emergent.serving.feedback`): labelled examples
that users chose to send, kept as sent.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

COLUMNS = (
    "ts",
    "task",
    "model_version",
    "request_id",
    "key_id",
    "n_chars",
    "n_tokens",
    "unk_share",
    "confidence",
    "label",
    "n_entities",
    "masked_text",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL, task TEXT NOT NULL, model_version TEXT, request_id TEXT, key_id TEXT,
    n_chars INTEGER, n_tokens INTEGER, unk_share REAL, confidence REAL, label TEXT,
    n_entities INTEGER, masked_text TEXT
);
CREATE INDEX IF NOT EXISTS predictions_task_ts ON predictions (task, ts);
CREATE INDEX IF NOT EXISTS predictions_request ON predictions (request_id);
"""
assert all(c in SCHEMA for c in COLUMNS)


def connect(path: Path) -> sqlite3.Connection:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process kills
    conn.executescript(SCHEMA)
    return conn


class RequestStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.conn = connect(self.path)
        # one connection shared by the recorder's writer thread and the feedback route's
        # look-ups: a lookup must not run inside (and see) a half-written batch
        self.lock = threading.Lock()

    def integrity(self) -> str:
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])

    def insert(self, records: Iterable[dict[str, Any]]) -> list[int]:
        """Insert records in one transaction; returns their row ids."""
        sql = (
            f"INSERT INTO predictions ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(COLUMNS))})"
        )
        with self.lock, self.conn:
            return [
                int(self.conn.execute(sql, tuple(r.get(c) for c in COLUMNS)).lastrowid or 0)
                for r in records
            ]

    def known_requests(self, task: str, request_ids: Iterable[str]) -> set[str]:
        """Which of `request_ids` name a stored prediction of `task` (feedback may say which
        prediction it corrects)."""
        wanted = sorted(set(request_ids))
        if not wanted:
            return set()
        sql = (
            "SELECT DISTINCT request_id FROM predictions WHERE task = ? "
            f"AND request_id IN ({', '.join('?' * len(wanted))})"
        )
        with self.lock:
            return {row[0] for row in self.conn.execute(sql, (task, *wanted))}

    def count(self, task: str | None = None) -> int:
        args: tuple[str, ...]
        sql, args = "SELECT COUNT(*) FROM predictions", ()
        if task:
            sql, args = sql + " WHERE task = ?", (task,)
        return int(self.conn.execute(sql, args).fetchone()[0])

    def rows(self, since: float = 0.0) -> Iterator[dict[str, Any]]:
        cur = self.conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM predictions WHERE ts >= ? ORDER BY id", (since,)
        )
        for row in cur:
            yield dict(zip(COLUMNS, row, strict=True))

    def close(self) -> None:
        self.conn.close()


def export_window(db: Path, out: Path, hours: float) -> int:
    """Write the last `hours` of records (no raw text) to a JSONL traffic window."""
    from emergent.io import write_jsonl

    with closing(RequestStore(db)) as store:
        rows = [
            {k: v for k, v in r.items() if k != "masked_text"}
            for r in store.rows(time.time() - hours * 3600)
        ]
    write_jsonl(out, rows)
    return len(rows)
