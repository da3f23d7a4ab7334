"""`POST /v1/{task}/predict`: texts in, the model's predictions out, through the task's
micro-batcher; each answered request goes to the recorder (sampled into the request store)."""

import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from emergent.serving.admission import PredictCaller, ServiceDep
from emergent.serving.api_error import ApiError
from emergent.serving.batching import Overloaded
from emergent.serving.predictor import PredictionError
from emergent.serving.recorder import Record
from emergent.serving.routes.signatures import Signatures, typed
from emergent.serving.slots import Loaded

PREDICT_PATH = "/v1/{task}/predict"
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Entities (start, end, type, score) or label and probabilities"},
    400: {"description": "Malformed JSON or a body that is not UTF-8"},
    401: {"description": "Missing or unknown API key"},
    403: {"description": "Key lacks the predict scope"},
    404: {"description": "Unknown task"},
    413: {"description": "Body too large"},
    422: {"description": "Invalid request (the `field` names what)"},
    429: {"description": "Rate limit (Retry-After)"},
    503: {"description": "Not ready or queue full (Retry-After)"},
}


async def predict(
    task: str, body: Any, request: Request, service: ServiceDep, key_id: PredictCaller
) -> JSONResponse:
    """The caller was admitted before this runs (`PredictCaller`); the answer names the model
    version that made it, read from the batch's model, since a reload may swap the slot's."""
    texts: list[str] = body.texts
    request.state.batch_size = len(texts)
    try:
        answers = await service.batchers[task].submit(texts)
    except Overloaded as err:
        raise ApiError(503, f"server busy: {err}", retry=service.s.retry_after_s) from err
    except PredictionError as err:
        raise ApiError(422, str(err), "texts") from err
    rows = [row for row, _ in answers]
    model: Loaded = answers[0][1]
    assert service.recorder is not None  # admitted: the service is ready
    service.recorder.submit(
        Record(task, texts, rows, model, request.state.request_id, key_id, time.time())
    )
    return JSONResponse(answer(task, model, rows))


def answer(task: str, model: Loaded, rows: list[dict[str, Any]]) -> dict[str, Any]:
    src = model.source
    return {
        "task": task,
        "model": src.name,
        "version": src.version,
        "alias": src.alias,
        "predictions": rows,
    }


def add_routes(app: FastAPI, signatures: Signatures) -> None:
    app.add_api_route(
        PREDICT_PATH,
        typed(predict, task=signatures.task, body=signatures.predict_body),
        methods=["POST"],
        summary="Predict for a list of texts",
        responses=RESPONSES,
    )
