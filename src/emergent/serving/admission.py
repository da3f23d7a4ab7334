"""Who may call a route, as FastAPI dependencies: the caller's key and its scope, the rate
limit, readiness, and what BodyGuard found in the raw body.

Predict and feedback run the checks in the order a caller meets them (`admit`): unknown task
(404), key (401/403), rate (429), readiness (503), then the body's size and encoding
(413/400). FastAPI parses the body before a route runs, so the exception handlers call `admit`
too (`emergent.serving.handlers`): a caller the route would refuse hears that first, never
what was wrong with its body.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request

from emergent.serving.api_error import ApiError
from emergent.serving.keys import KeyRecord
from emergent.serving.service import Service
from emergent.serving.validation import BODY_ERROR

ANONYMOUS = "anonymous"  # the key id of every caller while no key is configured
ADMITTED = "admitted"  # request.state key: the route's caller checks have passed
KEYS_FRESH_S = 1.0  # `keys add/revoke` reaches a running service within this time


def current_service(request: Request) -> Service:
    """The app's one Service (set by `create_app`), typed for the routes that depend on it."""
    service: Service = request.app.state.service
    return service


async def service_dependency(request: Request) -> Service:
    """`current_service` as a dependency: async, so FastAPI calls it on the event loop instead
    of handing a sync function to its thread pool on every request (8% of the event loop's
    time under load, py-spy, machine B)."""
    return current_service(request)


ServiceDep = Annotated[Service, Depends(service_dependency)]


def unknown_task(service: Service, task: str) -> ApiError:
    """404 naming the served tasks, so a caller can correct a typo."""
    return ApiError(404, f"unknown task {task!r}; served tasks: {', '.join(service.tasks)}")


def not_ready(service: Service) -> ApiError:
    return ApiError(503, "models are still loading", retry=service.s.retry_after_s)


def authorize(service: Service, request: Request, scope: str) -> str:
    """The caller's key id; 401 without a known key, 403 without the scope."""
    now = time.monotonic()
    if now - service.keys_checked > KEYS_FRESH_S:
        service.keys.refresh()
        service.keys_checked = now
    if not service.keys.enabled:
        return ANONYMOUS
    record: KeyRecord | None = service.keys.verify(request.headers.get("x-api-key"))
    if record is None:
        raise ApiError(401, "missing or unknown API key (header X-API-Key)")
    request.state.key_id = record.id  # the access log names a known key even when refused
    if not record.allows(scope):
        raise ApiError(403, f"API key {record.id} lacks the {scope!r} scope")
    return record.id


def limit_rate(service: Service, key_id: str) -> None:
    """429 with Retry-After once the key has spent its token bucket."""
    wait = service.rate.acquire(key_id)
    if wait > 0:
        rate = service.s.rate_per_second
        raise ApiError(429, f"rate limit of {rate:g} requests/s", retry=wait)


def admit(service: Service, request: Request, scope: str) -> str:
    """Every check before a predict or feedback body is looked at, in the order callers meet
    them (see the module's docstring). Returns the caller's key id."""
    task = str(request.path_params["task"])
    if task not in service.s.sources:
        raise unknown_task(service, task)
    request.state.task = task
    key_id = authorize(service, request, scope)
    request.state.key_id = key_id
    limit_rate(service, key_id)
    if not service.ready:
        raise not_ready(service)
    body_error = getattr(request.state, BODY_ERROR, None)
    if body_error is not None:
        raise body_error
    setattr(request.state, ADMITTED, True)
    return key_id


async def predict_caller(request: Request, service: ServiceDep) -> str:
    """The key id of a caller admitted to predict."""
    return admit(service, request, "predict")


async def feedback_caller(request: Request, service: ServiceDep) -> str:
    """The key id of a caller admitted to send feedback."""
    return admit(service, request, "feedback")


async def admin_caller(request: Request, service: ServiceDep) -> str:
    """The key id of a caller with the admin scope (reloads are not rate limited)."""
    key_id = authorize(service, request, "admin")
    request.state.key_id = key_id
    return key_id


PredictCaller = Annotated[str, Depends(predict_caller)]
FeedbackCaller = Annotated[str, Depends(feedback_caller)]
