"""Off the hot path: after a batch answered, a writer thread computes each text's features,
updates the distribution metrics and stores the record (features only) in the request store;
a sampled share of texts goes to the masking process, which stores only the masked text.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from emergent.serving.features import features
from emergent.serving.metrics import Metrics
from emergent.serving.store import RequestStore

log = logging.getLogger(__name__)


@dataclass
class Record:
    task: str
    texts: list[str]
    rows: list[dict[str, Any]]
    model: Any  # models.Loaded
    request_id: str
    key_id: str
    ts: float


class Recorder:
    def __init__(
        self,
        store: RequestStore,
        metrics: Metrics,
        max_pending: int,
        sample_rate: float = 0.0,
        masking: Any = None,
    ) -> None:
        self.store, self.metrics = store, metrics
        self.sample_rate, self.masking = float(sample_rate), masking
        self.inbox: queue.Queue[Record | None] = queue.Queue(maxsize=max_pending)
        self.thread = threading.Thread(target=self.run, name="emergent-recorder", daemon=True)
        self.thread.start()

    def submit(self, record: Record) -> None:
        try:
            self.inbox.put_nowait(record)
        except queue.Full:
            self.metrics.store_dropped.inc(len(record.texts))

    def run(self) -> None:
        while (record := self.inbox.get()) is not None:
            try:
                self.write(record)
            except Exception:
                log.exception("request store write failed (%d records lost)", len(record.texts))

    def write(self, rec: Record) -> None:
        feats = features(rec.model.predictor.tokenizer, rec.texts, rec.rows)
        m = self.metrics
        for f in feats:
            m.tokens.labels(rec.task).observe(f["n_tokens"])
            m.unknown.labels(rec.task).observe(f["unk_share"])
            m.confidence.labels(rec.task).observe(f["confidence"])
            m.labels.labels(rec.task, f["label"]).inc()
        common = {
            "ts": rec.ts,
            "task": rec.task,
            "model_version": rec.model.source.version,
            "request_id": rec.request_id,
            "key_id": rec.key_id,
        }
        ids = self.store.insert([{**common, **f} for f in feats])
        if self.masking is not None and self.sample_rate > 0:
            for row_id, text in zip(ids, rec.texts, strict=True):
                if random.random() < self.sample_rate:
                    self.masking.submit(row_id, text)

    def stop(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.inbox.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        with contextlib.suppress(queue.Full):
            self.inbox.put_nowait(None)
        self.thread.join(max(0.0, deadline - time.monotonic()))
