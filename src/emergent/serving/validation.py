"""What a predict request is, and how a bad one is answered.

One pydantic model (`request_model`) both validates the body (FastAPI parses it) and documents
it in the OpenAPI schema, with the configured limits in it. Pydantic's errors are turned back
into one clear line each (`api_error`), e.g. "texts[1] must be a string, not int". Checks on
the raw bytes (size, UTF-8) run before FastAPI reads the body (`BodyGuard`); their verdict
waits in the request state until the route has checked the caller, so an unknown caller
learns nothing about the body rules before it is told about its key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, create_model
from pydantic_core import PydanticCustomError

from emergent.serving.errors import ApiError

BODY_ERROR = "body_error"  # request.state key: the ApiError BodyGuard found, or None
OBJECT = 'expected a JSON object {"texts": ["...", ...]}'


def not_blank(text: str) -> str:
    """A text of whitespace only is empty (str.strip's whitespace, as the service always
    judged it): there is nothing to predict."""
    if not text.strip():
        raise PydanticCustomError("blank", "text is empty")
    return text


def request_model(max_texts: int, max_chars: int) -> type[BaseModel]:
    """The predict body, `{"texts": [...]}`, with this service's limits (they reach the schema)."""
    text = Annotated[
        str, StringConstraints(min_length=1, max_length=max_chars), AfterValidator(not_blank)
    ]
    return create_model(
        "PredictRequest",
        texts=(
            list[text],
            Field(
                ...,
                min_length=1,
                max_length=max_texts,
                description=f"Texts to analyse: 1 to {max_texts}, each 1 to {max_chars} "
                "characters and not blank",
            ),
        ),
    )


def position(doc: Any, pos: int) -> str:
    """'line L column C' of a character offset, as json.JSONDecodeError words it."""
    if not isinstance(doc, str):
        return f"character {pos}"
    line = doc.count("\n", 0, pos) + 1
    column = pos - doc.rfind("\n", 0, pos)
    return f"line {line} column {column}"


def api_error(errors: Sequence[dict[str, Any]], body: Any = None) -> ApiError:
    """One clear 4xx from pydantic's errors: the outermost problem first (the body, then the
    list, then the first bad text), as a reader would fix them."""
    err = min(errors, key=lambda e: len(e.get("loc", ())))
    loc = tuple(err.get("loc", ()))
    loc = loc[1:] if loc[:1] == ("body",) else loc
    kind, ctx = err.get("type", ""), err.get("ctx") or {}
    if kind == "json_invalid":
        pos = loc[0] if loc and isinstance(loc[0], int) else 0
        reason = ctx.get("error", err.get("msg"))
        return ApiError(400, f"malformed JSON: {reason} at {position(body, pos)}")
    if not loc or (loc == ("texts",) and kind == "missing"):
        raw = isinstance(err.get("input"), bytes)  # a body FastAPI did not read as JSON
        hint = " (send it as Content-Type: application/json)" if raw else ""
        return ApiError(422, OBJECT + hint, "texts")
    if loc == ("texts",):
        if kind == "too_short":
            return ApiError(422, "texts is empty: send at least one text", "texts")
        if kind == "too_long":
            n = ctx.get("actual_length") or len(err.get("input") or ())
            return ApiError(422, f"{n} texts; at most {ctx['max_length']} per request", "texts")
        return ApiError(422, "texts must be a list of strings", "texts")
    if len(loc) == 2 and loc[0] == "texts" and isinstance(loc[1], int):
        name, value = f"texts[{loc[1]}]", err.get("input")
        if kind == "string_type":
            return ApiError(422, f"{name} must be a string, not {type(value).__name__}", name)
        if kind in ("blank", "string_too_short"):
            return ApiError(422, f"{name} is empty", name)
        if kind == "string_unicode":  # a lone surrogate escape ("\ud800"): not a character
            return ApiError(422, f"{name} is not valid Unicode (a lone surrogate escape)", name)
        if kind == "string_too_long":
            n = len(value) if isinstance(value, str) else "too many"
            return ApiError(422, f"{name} has {n} characters; at most {ctx['max_length']}", name)
        return ApiError(422, f"{name}: {err['msg']}", name)
    where = ".".join(str(p) for p in loc)
    return ApiError(422, f"{where}: {err['msg']}", where)


def unparsable(cause: BaseException) -> ApiError:
    """400 for a body `json.loads` refused without a JSONDecodeError."""
    if isinstance(cause, RecursionError):
        return ApiError(400, "malformed JSON: nested too deeply")
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return ApiError(400, "malformed JSON: a number with too many digits")
    return ApiError(400, f"malformed JSON: {type(cause).__name__}")


class BodyGuard:
    """ASGI middleware: read a request body up to `max_bytes` and check it is UTF-8.

    A body that fails is not passed on (the route sees an empty one); the ApiError waits in
    `request.state.body_error` for the route to raise after its own checks, as the service
    answered before the body was parsed by FastAPI: unknown task, key, rate, readiness, body.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        body, problem = await self.read(scope, receive)
        scope.setdefault("state", {})[BODY_ERROR] = problem
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def read(self, scope: dict, receive: Callable) -> tuple[bytes, ApiError | None]:
        limit = self.max_bytes
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > limit:
            return b"", ApiError(413, f"body of {declared.decode()} bytes exceeds {limit}")
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return b"", None
            body.extend(message.get("body", b""))
            if len(body) > limit:
                return b"", ApiError(413, f"body exceeds {limit} bytes")
            if not message.get("more_body", False):
                break
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as err:
            return b"", ApiError(400, f"body is not valid UTF-8 (byte {err.start})")
        return bytes(body), None
