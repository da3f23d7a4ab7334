"""The inference service: every exported task from one FastAPI process, ONNX Runtime only.

`create_app(settings)` builds the app; models load in the background after the server binds,
so `/healthz` answers at once and `/readyz` turns true only when every task is warm.
This module (and everything it imports) must never import torch: a test checks it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from emergent.serving import logs
from emergent.serving.batching import MicroBatcher, Overloaded
from emergent.serving.keys import KeyRecord, KeyStore
from emergent.serving.limits import RateLimiter, retry_after
from emergent.serving.metrics import Metrics
from emergent.serving.models import Loaded, ModelLoadError, Slot, Source, load
from emergent.serving.predictor import PredictionError
from emergent.serving.recorder import Record, Recorder
from emergent.serving.store import RequestStore

log = logging.getLogger(__name__)

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
ANONYMOUS = "anonymous"


class PredictRequest(BaseModel):
    texts: list[str] = Field(..., min_length=1, description="Texts to analyse (non-empty)")


class ApiError(Exception):
    """An HTTP error with one clear message (and the offending field, where there is one)."""

    def __init__(
        self, status: int, detail: str, field: str | None = None, retry: float | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.field, self.retry = status, detail, field, retry

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"detail": self.detail}
        if self.field:
            body["field"] = self.field
        headers = {"Retry-After": retry_after(self.retry)} if self.retry is not None else None
        return JSONResponse(body, status_code=self.status, headers=headers)


@dataclass
class Settings:
    """What the service needs from `conf/serve/` (plain values: no omegaconf at runtime)."""

    sources: dict[str, Callable[[], Source]]  # task -> resolve (re-run on /admin/reload)
    keys_file: Path
    store_path: Path
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
        self.recorder: Recorder | None = None
        self.masking: Any = None
        self.keys_checked = 0.0

    @property
    def tasks(self) -> list[str]:
        return list(self.s.sources)

    # -- start-up and reload -------------------------------------------------------------------

    async def start(self) -> None:
        try:
            for task, resolve in self.s.sources.items():
                loaded = await asyncio.to_thread(self.load, resolve)
                self.slots[task] = slot = Slot(loaded)
                self.set_info(loaded)
                batcher = MicroBatcher(
                    current=lambda slot=slot: slot.current,
                    predict=lambda model, texts: model.predictor.predict(texts),
                    max_batch_size=self.s.max_batch_size,
                    max_wait_s=self.s.max_wait_ms / 1000,
                    max_queue=self.s.max_queue,
                    on_batch=lambda n, waits, task=task: self.on_batch(task, n, waits),
                )
                batcher.start()
                self.batchers[task] = batcher
            self.store = RequestStore(self.s.store_path)
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

    def start_masking(self) -> Any:
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
        for batcher in self.batchers.values():
            await batcher.stop()
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.stop)
        if self.masking is not None:
            await asyncio.to_thread(self.masking.stop)
        if self.store is not None:
            self.store.close()

    def on_batch(self, task: str, n: int, waits: list[float]) -> None:
        self.metrics.batch_size.labels(task).observe(n)
        for wait in waits:
            self.metrics.queue_wait.labels(task).observe(wait)

    # -- request checks ------------------------------------------------------------------------

    def authorize(self, request: Request, scope: str) -> str:
        """The caller's key id; 401 without a known key, 403 without the scope."""
        now = time.monotonic()
        if now - self.keys_checked > 1.0:  # pick up `keys add/revoke` within a second
            self.keys.refresh()
            self.keys_checked = now
        if not self.keys.enabled:
            return ANONYMOUS
        record: KeyRecord | None = self.keys.verify(request.headers.get("x-api-key"))
        if record is None:
            raise ApiError(401, "missing or unknown API key (header X-API-Key)")
        request.state.key_id = record.id
        if scope not in record.scopes:
            raise ApiError(403, f"API key {record.id} lacks the {scope!r} scope")
        return record.id

    def limit_rate(self, key_id: str) -> None:
        wait = self.rate.acquire(key_id)
        if wait > 0:
            raise ApiError(429, f"rate limit of {self.s.rate_per_second:g} requests/s", retry=wait)

    async def read_texts(self, request: Request) -> list[str]:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.s.max_body_bytes:
            raise ApiError(413, f"body of {declared} bytes exceeds {self.s.max_body_bytes}")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > self.s.max_body_bytes:
                raise ApiError(413, f"body exceeds {self.s.max_body_bytes} bytes")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ApiError(400, f"body is not valid UTF-8 (byte {err.start})") from err
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ApiError(
                400, f"malformed JSON: {err.msg} at line {err.lineno} column {err.colno}"
            ) from err
        if not isinstance(data, dict) or "texts" not in data:
            raise ApiError(422, 'expected a JSON object {"texts": ["...", ...]}', "texts")
        texts = data["texts"]
        if not isinstance(texts, list):
            raise ApiError(422, "texts must be a list of strings", "texts")
        if not texts:
            raise ApiError(422, "texts is empty: send at least one text", "texts")
        if len(texts) > self.s.max_texts:
            raise ApiError(
                422, f"{len(texts)} texts; at most {self.s.max_texts} per request", "texts"
            )
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ApiError(
                    422, f"texts[{i}] must be a string, not {type(t).__name__}", f"texts[{i}]"
                )
            if not t.strip():
                raise ApiError(422, f"texts[{i}] is empty", f"texts[{i}]")
            if len(t) > self.s.max_chars:
                raise ApiError(
                    422,
                    f"texts[{i}] has {len(t)} characters; at most {self.s.max_chars}",
                    f"texts[{i}]",
                )
        return texts


QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class AccessLog:
    """Request id, per-task request/latency metrics and one JSON access-log line per request.

    A plain ASGI middleware rather than `@app.middleware("http")`: Starlette's
    BaseHTTPMiddleware streams every response through an extra task and memory channel, which
    cost a noticeable share of a core per hundred requests/s in `make loadtest`.
    Handlers fill `request.state` (task, key id, batch size); the log reads it at the end.
    """

    def __init__(self, app: Any, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state.update(request_id=request_id, key_id=None, task=None, batch_size=None)
        status = 0  # 0 until the response starts

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error (request %s)", request_id)
            if status:  # the response had started: the connection is all that can be closed
                raise
            status = 500
            await JSONResponse(
                {"detail": "internal error"}, status_code=500, headers={"X-Request-ID": request_id}
            )(scope, receive, send)
        latency = time.perf_counter() - started
        task = state.get("task")
        if task is not None:
            self.service.metrics.requests.labels(task, str(status)).inc()
            self.service.metrics.latency.labels(task).observe(latency)
        if scope["path"] not in QUIET_PATHS:
            logs.access(
                request_id=request_id,
                method=scope["method"],
                path=scope["path"],
                task=task,
                batch_size=state.get("batch_size"),
                latency_ms=round(latency * 1000, 2),
                status=status,
                key_id=state.get("key_id"),
            )


def page() -> str:
    return files("emergent.serving").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(settings: Settings) -> FastAPI:
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        starting = asyncio.create_task(service.start())
        yield
        starting.cancel()
        await service.stop()

    app = FastAPI(
        title="emergent",
        version="1",
        summary="NER and text classification with int8 ONNX models",
        lifespan=lifespan,
    )
    app.state.service = service

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return err.response()

    app.add_middleware(AccessLog, service=service)

    @app.get("/healthz", summary="Alive")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", summary="Models loaded and warmed up")
    async def readyz() -> JSONResponse:
        body = {"ready": service.ready, "tasks": sorted(service.slots), "error": service.error}
        return JSONResponse(body, status_code=200 if service.ready else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        for task, batcher in service.batchers.items():
            service.metrics.queue_depth.labels(task).set(batcher.depth)
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", summary="Served models: task, name, version, alias, labels")
    async def models() -> dict[str, Any]:
        return {
            "ready": service.ready,
            "auth": service.keys.enabled,
            "torch_loaded": "torch" in sys.modules,  # the serving path must stay torch-free
            "models": [
                service.slots[t].current.info() for t in service.tasks if t in service.slots
            ],
        }

    @app.post(
        "/v1/{task}/predict",
        summary="Predict for a list of texts",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
            }
        },
        responses={
            200: {"description": "Entities (start, end, type, score) or label and probabilities"},
            401: {"description": "Missing or unknown API key"},
            403: {"description": "Key lacks the predict scope"},
            413: {"description": "Body too large"},
            422: {"description": "Invalid request (the `field` names what)"},
            429: {"description": "Rate limit (Retry-After)"},
            503: {"description": "Not ready or queue full (Retry-After)"},
        },
    )
    async def predict(task: str, request: Request) -> JSONResponse:
        if task not in service.s.sources:
            raise ApiError(404, f"unknown task {task!r}; served tasks: {', '.join(service.tasks)}")
        request.state.task = task
        key_id = service.authorize(request, "predict")
        request.state.key_id = key_id
        service.limit_rate(key_id)
        if not service.ready:
            raise ApiError(503, "models are still loading", retry=settings.retry_after_s)
        texts = await service.read_texts(request)
        request.state.batch_size = len(texts)
        try:
            answers = await service.batchers[task].submit(texts)
        except Overloaded as err:
            raise ApiError(503, f"server busy: {err}", retry=settings.retry_after_s) from err
        except PredictionError as err:
            raise ApiError(422, str(err), "texts") from err
        rows = [row for row, _ in answers]
        model: Loaded = answers[0][1]
        assert service.recorder is not None
        service.recorder.submit(
            Record(task, texts, rows, model, request.state.request_id, key_id, time.time())
        )
        src = model.source
        return JSONResponse(
            {
                "task": task,
                "model": src.name,
                "version": src.version,
                "alias": src.alias,
                "predictions": rows,
            }
        )

    @app.post("/admin/reload", summary="Resolve the models again and swap them in atomically")
    async def reload(request: Request, task: str | None = None) -> dict[str, Any]:
        request.state.key_id = service.authorize(request, "admin")
        if not service.ready:
            raise ApiError(503, "models are still loading", retry=settings.retry_after_s)
        if task is not None and task not in service.slots:
            raise ApiError(404, f"unknown task {task!r}; served tasks: {', '.join(service.tasks)}")
        try:
            return {"reloaded": await service.reload([task] if task else service.tasks)}
        except ModelLoadError as err:
            raise ApiError(409, f"reload failed, previous model kept: {err}") from err

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page())

    return app
