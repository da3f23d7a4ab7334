"""The inference service: every exported task from one FastAPI process, ONNX Runtime only.

`create_app(settings)` builds the app from its parts: the shared state (`service.Service`, on
`app.state.service`), who may call what (`admission`, as dependencies), how errors are
answered (`handlers`) and the routes, one module per concern (`routes/`). Models load in the
background after the server binds (`lifespan`), so `/healthz` answers at once and `/readyz`
turns true only when every task is warm.
This module (and everything it imports) must never import torch: a test checks it.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware import Middleware

from emergent.serving.access import AccessLog
from emergent.serving.handlers import HANDLERS
from emergent.serving.routes import Route, admin, feedback, health, page, predict
from emergent.serving.routes.signatures import Signatures
from emergent.serving.service import Service
from emergent.serving.settings import Settings
from emergent.serving.validation import BodyGuard


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start loading the models without waiting for them; on shutdown stop everything."""
    service: Service = app.state.service
    starting = asyncio.create_task(service.start())
    yield
    starting.cancel()
    await service.stop()


def create_app(settings: Settings) -> FastAPI:
    """The service's app; building it loads nothing (the lifespan does)."""
    service = Service(settings)
    app = FastAPI(
        title="emergent",
        version="1",
        summary="NER and text classification with int8 ONNX models",
        lifespan=lifespan,
        strict_content_type=False,  # a body without Content-Type is read as JSON, as before
        exception_handlers=HANDLERS,
        # the first runs first: the access log wraps BodyGuard and sees its answers
        middleware=[
            Middleware(AccessLog, metrics=service.metrics),
            Middleware(BodyGuard, max_bytes=settings.max_body_bytes),
        ],
    )
    app.state.service = service
    app.router.route_class = Route
    signatures = Signatures.of(settings)
    health.add_routes(app)
    predict.add_routes(app, signatures)
    feedback.add_routes(app, signatures)
    admin.add_routes(app, signatures)
    page.add_routes(app)
    return app
