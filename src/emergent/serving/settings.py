"""The service's Settings, and how `conf/serve/` becomes them (resolved paths, one resolver
per task). The app imports this module, never the reverse."""

from __future__ import annotations

import functools
import ipaddress
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emergent.io import under
from emergent.schema import ServeConfig
from emergent.serving.package import MODEL_FILE
from emergent.serving.slots import ModelLoadError, Source, resolve_local, resolve_registry


@dataclass
class Settings:
    """What the service needs from `conf/serve/` (plain values: no omegaconf at runtime)."""

    sources: dict[str, Callable[[], Source]]  # task -> resolve (re-run on /admin/reload)
    keys_file: Path
    store_path: Path
    feedback_uri: str | None = None  # PostgreSQL for the feedback table; None: store_path
    threads: int = 1
    warmup_batches: int = 3
    max_batch_size: int = 32
    max_wait_ms: float = 4.0
    max_body_bytes: int = 262144
    max_texts: int = 64
    max_chars: int = 2000
    rate_per_second: float = 50.0
    rate_burst: float = 100.0
    max_queue: int = 512
    retry_after_s: float = 1.0
    sample_rate: float = 0.0
    max_pending: int = 10000
    masking: dict[str, Any] = field(default_factory=dict)
    on_fatal: Callable[[str], None] | None = None


def server_stack() -> dict[str, str]:
    """The event loop and HTTP parser uvicorn's "auto" picks: uvloop and httptools when
    installed (the lock pins them), else asyncio and the pure-Python h11."""
    import importlib.util

    return {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
    }


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except OSError:
            return False


def build(serve: ServeConfig, tasks: list[str], root: Path, **overrides: Any) -> Settings:
    """Settings from the validated `serve` section. Raises ModelLoadError naming what is
    missing."""
    source = serve.source
    export_root = under(root, serve.export_root or "models/export")
    if serve.tasks:
        chosen = list(serve.tasks)
    elif source == "local":
        chosen = [t for t in tasks if (export_root / t / MODEL_FILE).is_file()]
        if not chosen:
            raise ModelLoadError(
                f"no model package under {export_root} for any of {tasks}: run `dvc repro` "
                "(export@<task>) or set serve.export_root / serve.source=registry"
            )
    else:
        chosen = list(tasks)
    if source == "local":
        sources = {t: functools.partial(resolve_local, t, export_root) for t in chosen}
        for resolve in sources.values():
            resolve()  # fail now, with a clear message, when a package is missing
    elif source == "registry":
        cache = Path(tempfile.mkdtemp(prefix="emergent-serve-"))
        sources = {t: functools.partial(resolve_registry, t, serve.alias, cache) for t in chosen}
    else:
        raise ModelLoadError(f"serve.source={source!r}: choose local or registry")
    limits, batching, store = serve.limits, serve.batching, serve.store
    masking = serve.masking.model_dump()  # plain: the masking process is sent a copy
    values: dict[str, Any] = {
        "sources": sources,
        "keys_file": under(root, serve.keys_file),
        "store_path": under(root, store.path),
        "feedback_uri": store.feedback_uri,
        "threads": serve.threads,
        "warmup_batches": serve.warmup_batches,
        "max_batch_size": batching.max_batch_size,
        "max_wait_ms": batching.max_wait_ms,
        "max_body_bytes": limits.max_body_bytes,
        "max_texts": limits.max_texts,
        "max_chars": limits.max_chars,
        "rate_per_second": limits.rate_per_second,
        "rate_burst": limits.rate_burst,
        "max_queue": limits.max_queue,
        "retry_after_s": limits.retry_after_s,
        "sample_rate": store.sample_rate,
        "max_pending": store.max_pending,
        "masking": masking,
    }
    values.update(overrides)
    return Settings(**values)
