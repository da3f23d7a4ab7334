"""API keys with scopes, stored only as sha256 hashes in a JSON file (git-ignored).

A key is `em_<id>_<secret>` with a 256-bit random secret, so a fast hash is enough (nothing to
brute-force); lookups hash the presented key and compare it with every stored hash through
`hmac.compare_digest`, so timing says nothing about how close a guess was. The key itself is
shown once, when created, and never stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from emergent.io import write_json

SCOPES = ("predict", "feedback", "admin")
# What a scope grants besides itself: an administrator may also send labelled feedback.
IMPLIES = {"admin": ("feedback",)}


class KeyFileError(ValueError):
    """The keys file cannot be read: one line naming the file and what is wrong."""


@dataclass(frozen=True)
class KeyRecord:
    id: str
    scopes: tuple[str, ...]
    sha256: str
    created: str = ""
    name: str = ""

    def allows(self, scope: str) -> bool:
        """Whether this key may act in `scope`: it holds it, or a scope that implies it."""
        return any(scope == held or scope in IMPLIES.get(held, ()) for held in self.scopes)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass
class KeyStore:
    path: Path
    records: list[KeyRecord] = field(default_factory=list)
    mtime: float = -1.0

    @classmethod
    def load(cls, path: Path) -> KeyStore:
        store = cls(Path(path))
        store.refresh()
        return store

    def refresh(self) -> None:
        """Re-read the file when it changed (so `keys revoke` takes effect without restart)."""
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self.records, self.mtime = [], -1.0
            return
        if mtime == self.mtime:
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            records = [
                KeyRecord(
                    r["id"],
                    tuple(r["scopes"]),
                    r["sha256"],
                    r.get("created", ""),
                    r.get("name", ""),
                )
                for r in data.get("keys", [])
            ]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise KeyFileError(f"{self.path}: not a keys file ({err})") from err
        self.records, self.mtime = records, mtime

    @property
    def enabled(self) -> bool:
        return bool(self.records)

    def verify(self, key: str | None) -> KeyRecord | None:
        """The record whose hash matches `key`, compared in constant time against every one."""
        if not key:
            return None
        presented = digest(key)
        found = None
        for record in self.records:
            if hmac.compare_digest(presented, record.sha256):
                found = record
        return found

    def save(self) -> None:
        write_json(
            self.path, {"keys": [asdict(r) | {"scopes": list(r.scopes)} for r in self.records]}
        )
        self.path.chmod(0o600)

    def add(self, scopes: list[str], name: str = "") -> tuple[KeyRecord, str]:
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise KeyFileError(f"unknown scope {bad or scopes}; choose from {', '.join(SCOPES)}")
        key_id = secrets.token_hex(4)
        key = f"em_{key_id}_{secrets.token_urlsafe(32)}"
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        record = KeyRecord(key_id, tuple(dict.fromkeys(scopes)), digest(key), created, name)
        self.records.append(record)
        self.save()
        return record, key

    def revoke(self, key_id: str) -> KeyRecord:
        for record in self.records:
            if record.id == key_id:
                self.records.remove(record)
                self.save()
                return record
        raise KeyFileError(f"{self.path}: no key with id {key_id!r}")
