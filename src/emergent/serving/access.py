"""The access log: request id, per-task request/latency metrics and one JSON line per request."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse

from emergent.serving import logs
from emergent.serving.metrics import Metrics

log = logging.getLogger(__name__)

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class AccessLog:
    """Request id, per-task request/latency metrics and one JSON access-log line per request.

    A plain ASGI middleware rather than `@app.middleware("http")`: Starlette's
    BaseHTTPMiddleware streams every response through an extra task and memory channel, which
    cost a noticeable share of a core per hundred requests/s in `make loadtest`.
    Handlers fill `request.state` (task, key id, batch size); the log reads it at the end.
    """

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

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
            self.metrics.requests.labels(task, str(status)).inc()
            self.metrics.latency.labels(task).observe(latency)
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
