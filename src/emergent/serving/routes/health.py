"""What the service says about itself: alive, ready, its metrics and the models it serves."""

import sys
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from emergent.serving.admission import ServiceDep


async def healthz() -> dict[str, str]:
    """Alive as soon as the server binds, before the models load: a liveness probe must not
    restart a service that is still warming up."""
    return {"status": "alive"}


async def readyz(service: ServiceDep) -> JSONResponse:
    """503 until every task's model is loaded and warm (with the start-up error, if any), so a
    balancer sends no traffic before the first request can be answered."""
    body = {"ready": service.ready, "tasks": sorted(service.slots), "error": service.error}
    return JSONResponse(body, status_code=200 if service.ready else 503)


async def metrics(service: ServiceDep) -> Response:
    """Prometheus text; the queue depths are read at scrape time, as they change per request."""
    for task, batcher in service.batchers.items():
        service.metrics.queue_depth.labels(task).set(batcher.depth)
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def models(service: ServiceDep) -> dict[str, Any]:
    """The models now answering (a reload changes them), whether keys are required, and
    whether torch was loaded: the serving path must stay torch-free."""
    return {
        "ready": service.ready,
        "auth": service.keys.enabled,
        "torch_loaded": "torch" in sys.modules,
        "models": [service.slots[t].current.info() for t in service.tasks if t in service.slots],
    }


def add_routes(app: FastAPI) -> None:
    app.add_api_route("/healthz", healthz, methods=["GET"], summary="Alive")
    app.add_api_route("/readyz", readyz, methods=["GET"], summary="Models loaded and warmed up")
    app.add_api_route("/metrics", metrics, methods=["GET"], summary="Prometheus metrics")
    app.add_api_route(
        "/v1/models",
        models,
        methods=["GET"],
        summary="Served models: task, name, version, alias, labels",
    )
