"""The inference service: every exported task from one FastAPI process, ONNX Runtime only.

`create_app(settings)` builds the app; models load in the background after the server binds,
so `/healthz` answers at once and `/readyz` turns true only when every task is warm.
This module (and everything it imports) must never import torch: a test checks it.
"""

# No `from __future__ import annotations`: FastAPI reads the predict route's body type, a
# model built per app (with its limits), from the live annotation.

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from importlib.resources import files
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Path, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from emergent.errors import ExampleError
from emergent.serving.access import AccessLog
from emergent.serving.api_error import ApiError
from emergent.serving.batching import MicroBatcher, Overloaded
from emergent.serving.feedback import (
    FeedbackStore,
    FeedbackStoreError,
    NewFeedback,
    content_hash,
)
from emergent.serving.keys import KeyRecord, KeyStore
from emergent.serving.limits import RateLimiter
from emergent.serving.metrics import Metrics
from emergent.serving.predictor import PredictionError
from emergent.serving.recorder import Record, Recorder
from emergent.serving.settings import Settings
from emergent.serving.slots import Loaded, ModelLoadError, Slot, Source, load
from emergent.serving.store import RequestStore
from emergent.serving.validation import (
    BODY_ERROR,
    BodyGuard,
    api_error,
    feedback_model,
    request_model,
    unparsable,
)

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
ADMITTED = "admitted"  # request.state key: the route's caller checks have passed
FEEDBACK_PATH = "/v1/{task}/feedback"


def current_model(slot: Slot) -> Loaded:
    """The model a batch runs on: read once per batch, so a reload swaps between batches."""
    return slot.current


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
                    current=partial(current_model, slot),
                    predict=lambda model, texts: model.predictor.predict(texts),
                    max_batch_size=self.s.max_batch_size,
                    max_wait_s=self.s.max_wait_ms / 1000,
                    max_queue=self.s.max_queue,
                    on_batch=partial(self.on_batch, task),
                )
                batcher.start()
                self.batchers[task] = batcher
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
        if self.feedback is not None:
            self.feedback.close()

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
        if not record.allows(scope):
            raise ApiError(403, f"API key {record.id} lacks the {scope!r} scope")
        return record.id

    def limit_rate(self, key_id: str) -> None:
        wait = self.rate.acquire(key_id)
        if wait > 0:
            raise ApiError(429, f"rate limit of {self.s.rate_per_second:g} requests/s", retry=wait)

    def admit(self, task: str, request: Request, scope: str = "predict") -> str:
        """The checks before a predict or feedback body is looked at, in the order callers
        meet them: unknown task (404), key (401/403), rate (429), readiness (503), then what
        BodyGuard found in the raw body (413, 400). Returns the caller's key id."""
        if task not in self.s.sources:
            raise ApiError(404, f"unknown task {task!r}; served tasks: {', '.join(self.tasks)}")
        request.state.task = task
        key_id = self.authorize(request, scope)
        request.state.key_id = key_id
        self.limit_rate(key_id)
        if not self.ready:
            raise ApiError(503, "models are still loading", retry=self.s.retry_after_s)
        body_error = getattr(request.state, BODY_ERROR, None)
        if body_error is not None:
            raise body_error
        setattr(request.state, ADMITTED, True)
        return key_id


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
        strict_content_type=False,  # a body without Content-Type is read as JSON, as before
    )
    app.state.service = service
    PredictRequest = request_model(settings.max_texts, settings.max_chars)
    FeedbackRequest = feedback_model(settings.max_texts, settings.max_chars)
    # the schema lists the served tasks; another name is still a 404 naming them (not a 422)
    served = {"enum": list(settings.sources)}
    TaskName = Annotated[str, Path(description="A served task", json_schema_extra=served)]
    OneTask = Annotated[
        str | None, Query(description="One served task (default: all)", json_schema_extra=served)
    ]

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, err: ApiError) -> JSONResponse:
        return err.response()

    def is_feedback(request: Request) -> bool:
        return getattr(request.scope.get("route"), "path", None) == FEEDBACK_PATH

    def refused(request: Request) -> JSONResponse | None:
        """FastAPI reads the body before the route's own checks run: a caller the route would
        refuse (unknown task, key, rate, not ready) hears that first, as before."""
        task = request.path_params.get("task")
        if task is not None and not getattr(request.state, ADMITTED, False):
            scope = "feedback" if is_feedback(request) else "predict"
            try:
                service.admit(str(task), request, scope)
            except ApiError as err:
                return err.response()
        return None

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        key = "examples" if is_feedback(request) else "texts"
        return refused(request) or api_error(err.errors(), err.body, key).response()

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, err: StarletteHTTPException) -> Response:
        # A body json.loads cannot take apart without a JSONDecodeError (nested too deeply,
        # a number too long) reaches us as FastAPI's bare 400: say what it was.
        if err.status_code == 400 and err.__cause__ is not None:
            return refused(request) or unparsable(err.__cause__).response()
        return await http_exception_handler(request, err)

    # the middleware added last runs first: the access log wraps BodyGuard and sees its answers
    app.add_middleware(BodyGuard, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLog, metrics=service.metrics)

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

    async def admitted(task: TaskName, request: Request) -> str:
        return service.admit(task, request)

    @app.post(
        "/v1/{task}/predict",
        summary="Predict for a list of texts",
        responses={
            200: {"description": "Entities (start, end, type, score) or label and probabilities"},
            400: {"description": "Malformed JSON or a body that is not UTF-8"},
            401: {"description": "Missing or unknown API key"},
            403: {"description": "Key lacks the predict scope"},
            404: {"description": "Unknown task"},
            413: {"description": "Body too large"},
            422: {"description": "Invalid request (the `field` names what)"},
            429: {"description": "Rate limit (Retry-After)"},
            503: {"description": "Not ready or queue full (Retry-After)"},
        },
    )
    async def predict(
        task: TaskName,
        body: Annotated[PredictRequest, Body()],  # type: ignore[valid-type]
        request: Request,
        key_id: Annotated[str, Depends(admitted)],
    ) -> JSONResponse:
        texts: list[str] = body.texts  # type: ignore[attr-defined]  # model made at run time
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

    async def feedback_admitted(task: TaskName, request: Request) -> str:
        return service.admit(task, request, "feedback")

    @app.post(
        FEEDBACK_PATH,
        status_code=201,
        summary="Store labelled examples (the task's shape), optionally naming the prediction "
        "each corrects",
        responses={
            201: {"description": "How many examples were stored, and their ids"},
            400: {"description": "Malformed JSON or a body that is not UTF-8"},
            401: {"description": "Missing or unknown API key"},
            403: {"description": "Key lacks the feedback scope"},
            404: {"description": "Unknown task"},
            413: {"description": "Body too large"},
            422: {"description": "Invalid example (`field` names it); nothing is stored"},
            429: {"description": "Rate limit (Retry-After)"},
            503: {"description": "Not ready (Retry-After)"},
        },
    )
    async def feedback(
        task: TaskName,
        body: Annotated[FeedbackRequest, Body()],  # type: ignore[valid-type]
        request: Request,
        key_id: Annotated[str, Depends(feedback_admitted)],
    ) -> JSONResponse:
        model = service.slots[task].current
        rules, labels = model.predictor.task, list(model.predictor.labels)
        examples = body.examples  # type: ignore[attr-defined]  # model made at run time
        sent = [e.model_dump(exclude_unset=True) for e in examples]
        request.state.batch_size = len(sent)  # a count: the access log never sees an example
        checked = []
        for i, example in enumerate(sent):
            request_id = example.pop("request_id", None)
            try:
                fields = rules.check_labelled(example, labels, settings.max_chars)
            except ExampleError as err:
                name = f"examples[{i}].{err.field}"
                raise ApiError(422, f"{name}: {err.message}", name) from err
            checked.append((fields, request_id))
        wanted = {rid for _, rid in checked if rid is not None}
        assert service.store is not None and service.feedback is not None
        known = await asyncio.to_thread(service.store.known_requests, task, wanted)
        for i, (_, request_id) in enumerate(checked):
            if request_id is not None and request_id not in known:
                name = f"examples[{i}].request_id"
                raise ApiError(422, f"{name}: no prediction of {task} with that id", name)
        now = time.time()
        rows = [
            NewFeedback(
                now,
                task,
                model.source.version,
                request_id,
                key_id,
                fields,
                content_hash(fields, rules.example_fields),
            )
            for fields, request_id in checked
        ]
        try:
            ids = await asyncio.to_thread(service.feedback.add, rows)
        except FeedbackStoreError as err:
            log.error("feedback not stored: %s", err)
            raise ApiError(503, "feedback store unavailable; nothing stored", retry=5.0) from err
        return JSONResponse(
            {"task": task, "version": model.source.version, "stored": len(ids), "ids": ids},
            status_code=201,
        )

    @app.post("/admin/reload", summary="Resolve the models again and swap them in atomically")
    async def reload(request: Request, task: OneTask = None) -> dict[str, Any]:
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
