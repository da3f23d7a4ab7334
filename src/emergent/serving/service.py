"""What the routes share, in one typed object (`app.state.service`): the settings, the model
slots and their batchers, keys, limits, metrics, the request and feedback stores.

It also runs the service's life: models load in the background after the server binds (so
`/healthz` answers at once and `/readyz` turns true when every task is warm), a reload swaps
each model in atomically, and shutdown drains the batchers before the stores close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from emergent.serving.batching import MicroBatcher
from emergent.serving.feedback import FeedbackStore
from emergent.serving.keys import KeyStore
from emergent.serving.limits import RateLimiter
from emergent.serving.metrics import Metrics
from emergent.serving.recorder import Recorder
from emergent.serving.settings import Settings
from emergent.serving.slots import Loaded, ModelLoadError, Slot, Source, load
from emergent.serving.store import RequestStore

log = logging.getLogger(__name__)


def current_model(slot: Slot) -> Loaded:
    """The model a batch runs on: read once per batch, so a reload swaps between batches."""
    return slot.current


def run_model(model: Loaded, texts: list[str]) -> list[dict[str, Any]]:
    """One batch through the model the batch was given (not the slot's latest)."""
    return model.predictor.predict(texts)


class Service:
    """Everything the routes share: models, batchers, keys, limits, metrics and the recorder."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.metrics = Metrics()
        self.keys = KeyStore.load(settings.keys_file)
        self.rate = RateLimiter(settings.rate_per_second, settings.rate_burst)
        self.slots: dict[str, Slot] = {}
        self.batchers: dict[str, MicroBatcher] = {}
        self.ready = False
        self.error: str | None = None
        self.store: RequestStore | None = None
        self.feedback: FeedbackStore | None = None
        self.recorder: Recorder | None = None
        self.masking: Any = None
        self.keys_checked = 0.0  # when the key file was last looked at (time.monotonic)

    @property
    def tasks(self) -> list[str]:
        return list(self.s.sources)

    # -- start-up and reload -------------------------------------------------------------------

    async def start(self) -> None:
        """Load every task, then open the stores; a failure is kept in `error` for `/readyz`
        (and handed to `on_fatal`) instead of killing the server that reports it."""
        try:
            for task, resolve in self.s.sources.items():
                loaded = await asyncio.to_thread(self.load, resolve)
                self.slots[task] = slot = Slot(loaded)
                self.set_info(loaded)
                self.batchers[task] = self.start_batcher(task, slot)
            self.store = RequestStore(self.s.store_path)
            self.feedback = await asyncio.to_thread(
                FeedbackStore.open, self.s.feedback_uri, self.s.store_path
            )
            if self.s.sample_rate > 0 and self.s.masking.get("enabled", True):
                self.masking = self.start_masking()
            self.recorder = Recorder(
                self.store, self.metrics, self.s.max_pending, self.s.sample_rate, self.masking
            )
        except Exception as err:
            self.error = (
                str(err) if isinstance(err, ModelLoadError) else f"{type(err).__name__}: {err}"
            )
            log.error("start-up failed: %s", self.error)
            if self.s.on_fatal is not None:
                self.s.on_fatal(self.error)
            return
        self.ready = True
        log.info("ready: %s", ", ".join(self.tasks))

    def start_batcher(self, task: str, slot: Slot) -> MicroBatcher:
        """The task's micro-batcher, reading the slot's model once per batch."""
        batcher = MicroBatcher(
            current=partial(current_model, slot),
            predict=run_model,
            max_batch_size=self.s.max_batch_size,
            max_wait_s=self.s.max_wait_ms / 1000,
            max_queue=self.s.max_queue,
            on_batch=partial(self.on_batch, task),
        )
        batcher.start()
        return batcher

    def start_masking(self) -> Any:
        """The masking process (imported here: only a service that samples traffic needs it),
        with the configured NER task's export when that task is served and tags entities."""
        from emergent.serving.masking import MaskingProcess

        ner_task = self.s.masking.get("ner_task")
        ner_dir = None
        if ner_task in self.slots and self.slots[ner_task].current.kind == "entities":
            ner_dir = self.slots[ner_task].current.source.export_dir
        assert self.store is not None
        return MaskingProcess(self.s.masking, ner_dir, self.store.path)

    def load(self, resolve: Callable[[], Source]) -> Loaded:
        return load(resolve(), self.s.threads, self.s.warmup_batches)

    def set_info(self, loaded: Loaded, old: Loaded | None = None) -> None:
        """`model_info` is 1 for the model now serving a task, 0 for the one it replaced."""
        if old is not None:
            src = old.source
            self.metrics.model_info.labels(src.task, src.name, src.version, str(src.alias)).set(0)
        src = loaded.source
        self.metrics.model_info.labels(src.task, src.name, src.version, str(src.alias)).set(1)

    async def reload(self, tasks: list[str]) -> dict[str, Any]:
        """Resolve each task's source again, load and warm the new model, then swap it in."""
        result = {}
        for task in tasks:
            slot = self.slots[task]
            new = await asyncio.to_thread(self.load, self.s.sources[task])
            old = slot.swap(new)
            self.set_info(new, old)
            result[task] = {"previous": old.source.version, "current": new.source.version}
            log.info("reloaded %s: %s -> %s", task, old.source.version, new.source.version)
        return result

    async def stop(self) -> None:
        """Drain the batchers first: their last answers still reach the recorder and stores."""
        for batcher in self.batchers.values():
            await batcher.stop()
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.stop)
        if self.masking is not None:
            await asyncio.to_thread(self.masking.stop)
        if self.store is not None:
            self.store.close()
        if self.feedback is not None:
            self.feedback.close()

    def on_batch(self, task: str, n: int, waits: list[float]) -> None:
        self.metrics.batch_size.labels(task).observe(n)
        for wait in waits:
            self.metrics.queue_wait.labels(task).observe(wait)
