"""`POST /v1/{task}/feedback`: labelled examples in the task's shape, each optionally naming
the prediction it corrects, stored for the continuous-training loop (docs/feedback.md).

All or nothing: every example is checked against the serving model's task rules and labels,
and every request id against the request store, before one is stored.
"""

import asyncio
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from emergent.errors import ExampleError
from emergent.serving.admission import FeedbackCaller, ServiceDep
from emergent.serving.api_error import ApiError
from emergent.serving.feedback import FeedbackStoreError, NewFeedback, content_hash
from emergent.serving.routes.signatures import Signatures, typed
from emergent.serving.service import Service
from emergent.serving.slots import Loaded

log = logging.getLogger(__name__)

FEEDBACK_PATH = "/v1/{task}/feedback"
RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {"description": "How many examples were stored, and their ids"},
    400: {"description": "Malformed JSON or a body that is not UTF-8"},
    401: {"description": "Missing or unknown API key"},
    403: {"description": "Key lacks the feedback scope"},
    404: {"description": "Unknown task"},
    413: {"description": "Body too large"},
    422: {"description": "Invalid example (`field` names it); nothing is stored"},
    429: {"description": "Rate limit (Retry-After)"},
    503: {"description": "Not ready (Retry-After)"},
}

Checked = list[tuple[dict[str, Any], str | None]]  # an example's task fields, its request id


async def feedback(
    task: str, body: Any, request: Request, service: ServiceDep, key_id: FeedbackCaller
) -> JSONResponse:
    """The examples are checked against the model serving now, whose version is stored with
    them: the loop can tell which model a correction was about."""
    model = service.slots[task].current
    sent = [e.model_dump(exclude_unset=True) for e in body.examples]
    request.state.batch_size = len(sent)  # a count: the access log never sees an example
    checked = check_examples(model, sent, service.s.max_chars)
    await check_request_ids(service, task, checked)
    now = time.time()
    fields = model.predictor.task.example_fields
    rows = [
        NewFeedback(now, task, model.source.version, rid, key_id, example,
                    content_hash(example, fields))
        for example, rid in checked
    ]  # fmt: skip
    assert service.feedback is not None  # admitted: the service is ready
    try:
        ids = await asyncio.to_thread(service.feedback.add, rows)
    except FeedbackStoreError as err:
        log.error("feedback not stored: %s", err)
        raise ApiError(503, "feedback store unavailable; nothing stored", retry=5.0) from err
    return JSONResponse(
        {"task": task, "version": model.source.version, "stored": len(ids), "ids": ids},
        status_code=201,
    )


def check_examples(model: Loaded, sent: list[dict[str, Any]], max_chars: int) -> Checked:
    """Each example by its task's rules and the model's labels; 422 naming the first bad
    field as `examples[i].<field>`."""
    rules, labels = model.predictor.task, list(model.predictor.labels)
    checked = []
    for i, example in enumerate(sent):
        request_id = example.pop("request_id", None)
        try:
            fields = rules.check_labelled(example, labels, max_chars)
        except ExampleError as err:
            name = f"examples[{i}].{err.field}"
            raise ApiError(422, f"{name}: {err.message}", name) from err
        checked.append((fields, request_id))
    return checked


async def check_request_ids(service: Service, task: str, checked: Checked) -> None:
    """422 for a request id that names no stored prediction of this task: a stored example
    links only to a prediction that exists (one answered a moment ago may not be written
    yet: the recorder writes in the background)."""
    wanted = {rid for _, rid in checked if rid is not None}
    assert service.store is not None  # admitted: the service is ready
    known = await asyncio.to_thread(service.store.known_requests, task, wanted)
    for i, (_, request_id) in enumerate(checked):
        if request_id is not None and request_id not in known:
            name = f"examples[{i}].request_id"
            raise ApiError(422, f"{name}: no prediction of {task} with that id", name)


def add_routes(app: FastAPI, signatures: Signatures) -> None:
    app.add_api_route(
        FEEDBACK_PATH,
        typed(feedback, task=signatures.task, body=signatures.feedback_body),
        methods=["POST"],
        status_code=201,
        summary="Store labelled examples (the task's shape), optionally naming the prediction "
        "each corrects",
        responses=RESPONSES,
    )
