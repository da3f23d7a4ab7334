"""Dynamic micro-batching: one asyncio queue per task collects texts across requests and one
worker turns each batch into a single ONNX Runtime call (padded to the longest text in it).

The worker reads the model slot once per batch, so a reload swaps the predictor between
batches and no request ever sees a half-loaded model.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


class Overloaded(RuntimeError):
    """The task's queue is full: the caller answers 503 with Retry-After."""


@dataclass
class Item:
    text: str
    future: asyncio.Future
    enqueued: float


class MicroBatcher:
    def __init__(
        self,
        current: Callable[[], Any],
        predict: Callable[[Any, list[str]], list[dict[str, Any]]],
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[int, list[float]], None] | None = None,
    ) -> None:
        self.current = current
        self.predict = predict
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_wait_s = max(0.0, float(max_wait_s))
        self.max_queue = int(max_queue)
        self.on_batch = on_batch
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ort")
        self.worker: asyncio.Task | None = None
        self.last_size = 0

    def start(self) -> None:
        self.worker = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker
        self.executor.shutdown(wait=False, cancel_futures=True)

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    async def submit(self, texts: list[str]) -> list[tuple[dict[str, Any], Any]]:
        """Queue the texts; resolve to (row, model) per text once their batches have run."""
        if self.queue.qsize() + len(texts) > self.max_queue:
            raise Overloaded(f"queue full ({self.queue.qsize()} texts waiting)")
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        items = [Item(t, loop.create_future(), now) for t in texts]
        for item in items:
            self.queue.put_nowait(item)
        return list(await asyncio.gather(*(i.future for i in items)))

    async def collect(self) -> list[Item]:
        """The next batch: what is queued, plus what arrives within max_wait_s, but only when
        the previous batch had company. A lone client (the last batch held one text) is
        answered at once instead of paying max_wait_s on every request."""
        batch = [await self.queue.get()]
        wait = self.max_wait_s if self.last_size > 1 or not self.queue.empty() else 0.0
        deadline = time.perf_counter() + wait
        while len(batch) < self.max_batch_size:
            try:
                batch.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except TimeoutError:
                break
        return batch

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self.collect()
            self.last_size = len(batch)
            batch = [i for i in batch if not i.future.done()]  # caller gone
            if not batch:
                continue
            model = self.current()
            started = time.perf_counter()
            waits = [started - i.enqueued for i in batch]
            try:
                rows = await loop.run_in_executor(
                    self.executor, self.predict, model, [i.text for i in batch]
                )
            except Exception as err:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(err)
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch), waits)
            for item, row in zip(batch, rows, strict=True):
                if not item.future.done():
                    item.future.set_result((row, model))
