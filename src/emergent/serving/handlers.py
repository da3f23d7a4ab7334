"""How the service answers an error: its own ApiError as is, FastAPI's body errors as one
clear line naming the field (`validation.api_error`), and never a body error to a caller the
route would refuse anyway (`refused`: FastAPI parses the body before the route's checks run).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from emergent.serving.admission import ADMITTED, admit, current_service
from emergent.serving.api_error import ApiError
from emergent.serving.routes.feedback import FEEDBACK_PATH
from emergent.serving.validation import api_error, unparsable


def is_feedback(request: Request) -> bool:
    """Whether the matched route is feedback (its body's list is `examples`, its scope
    `feedback`)."""
    return getattr(request.scope.get("route"), "path", None) == FEEDBACK_PATH


def refused(request: Request) -> JSONResponse | None:
    """The answer to a caller the route would refuse (unknown task, key, rate, not ready), or
    None when the caller is admitted or the route checks no caller."""
    task = request.path_params.get("task")
    if task is not None and not getattr(request.state, ADMITTED, False):
        scope = "feedback" if is_feedback(request) else "predict"
        try:
            admit(current_service(request), request, scope)
        except ApiError as err:
            return err.response()
    return None


async def on_api_error(request: Request, err: ApiError) -> Response:
    return err.response()


async def on_invalid(request: Request, err: RequestValidationError) -> Response:
    """A body pydantic refused: one line naming the first field to fix."""
    key = "examples" if is_feedback(request) else "texts"
    return refused(request) or api_error(err.errors(), err.body, key).response()


async def on_http_error(request: Request, err: StarletteHTTPException) -> Response:
    """A body json.loads cannot take apart without a JSONDecodeError (nested too deeply, a
    number too long) reaches us as FastAPI's bare 400: say what it was. Other HTTP errors
    (404 route, 405 method) keep FastAPI's answer."""
    if err.status_code == 400 and err.__cause__ is not None:
        return refused(request) or unparsable(err.__cause__).response()
    return await http_exception_handler(request, err)


Handler = Callable[[Request, Any], Coroutine[Any, Any, Response]]
HANDLERS: dict[int | type[Exception], Handler] = {
    ApiError: on_api_error,
    RequestValidationError: on_invalid,
    StarletteHTTPException: on_http_error,
}
