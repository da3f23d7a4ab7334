"""What a predict or feedback request is, and how a bad one is answered.

One pydantic model per route (`request_model`, `feedback_model`) both validates the body
(FastAPI parses it) and documents it in the OpenAPI schema, with the configured limits in it.
A feedback example's types are checked here; its task's rules (label set, IOB2, counts, the
predict limits) are the task's own (`Task.check_labelled`), run by the route. Pydantic's
errors are turned back into one clear line each (`api_error`), e.g. "texts[1] must be a
string, not int". Checks on the raw bytes (size, UTF-8) run before FastAPI reads the body
(`BodyGuard`); their verdict waits in the request state until the route has checked the
caller, so an unknown caller learns nothing about the body rules before it is told about its
key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    create_model,
)
from pydantic_core import PydanticCustomError

from emergent.serving.api_error import ApiError

BODY_ERROR = "body_error"  # request.state key: the ApiError BodyGuard found, or None
OBJECTS = {
    "texts": 'expected a JSON object {"texts": ["...", ...]}',
    "examples": 'expected a JSON object {"examples": [{...}, ...]}',
}
MAX_REQUEST_ID = 128  # as long as a request id the access log accepts


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


def feedback_model(max_examples: int, max_chars: int) -> type[BaseModel]:
    """The feedback body, `{"examples": [...]}`: each example in its task's shape, with the
    request id of the prediction it corrects, if any. Unknown fields are refused: an example
    is stored as sent, so nothing may be dropped from it silently."""
    example = create_model(
        "FeedbackExample",
        __config__=ConfigDict(extra="forbid"),
        text=(str | None, Field(None, description=f"Text tasks: 1 to {max_chars} characters")),
        label=(str | None, Field(None, description="Text tasks: one of the model's labels")),
        tokens=(list[str] | None, Field(None, description="Token tasks: the words")),
        tags=(list[str] | None, Field(None, description="Token tasks: one IOB2 tag per word")),
        request_id=(
            str | None,
            Field(
                None,
                max_length=MAX_REQUEST_ID,
                description="The X-Request-ID of the prediction this example corrects",
            ),
        ),
    )
    return create_model(
        "FeedbackRequest",
        examples=(
            list[example],  # type: ignore[valid-type]
            Field(
                ...,
                min_length=1,
                max_length=max_examples,
                description=f"Labelled examples: 1 to {max_examples}, in the task's shape: "
                '{"text", "label"} or {"tokens", "tags"}',
            ),
        ),
    )


def field_name(loc: Sequence[Any]) -> str:
    """A pydantic location as a reader writes it: `examples[0].tags[2]`."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def item_error(name: str, err: dict[str, Any]) -> ApiError:
    """One clear line for a bad value inside the body (a text, an example or its field)."""
    kind, ctx, value = err.get("type", ""), err.get("ctx") or {}, err.get("input")
    if kind == "string_type":
        return ApiError(422, f"{name} must be a string, not {type(value).__name__}", name)
    if kind in ("blank", "string_too_short"):
        return ApiError(422, f"{name} is empty", name)
    if kind == "string_unicode":  # a lone surrogate escape ("\ud800"): not a character
        return ApiError(422, f"{name} is not valid Unicode (a lone surrogate escape)", name)
    if kind == "string_too_long":
        n = len(value) if isinstance(value, str) else "too many"
        return ApiError(422, f"{name} has {n} characters; at most {ctx['max_length']}", name)
    if kind == "list_type":
        return ApiError(422, f"{name} must be a list, not {type(value).__name__}", name)
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return ApiError(422, f"{name} must be a JSON object, not {type(value).__name__}", name)
    if kind == "extra_forbidden":
        return ApiError(422, f"{name} is not a field of an example", name)
    return ApiError(422, f"{name}: {err['msg']}", name)


def position(doc: Any, pos: int) -> str:
    """'line L column C' of a character offset, as json.JSONDecodeError words it."""
    if not isinstance(doc, str):
        return f"character {pos}"
    line = doc.count("\n", 0, pos) + 1
    column = pos - doc.rfind("\n", 0, pos)
    return f"line {line} column {column}"


def api_error(errors: Sequence[dict[str, Any]], body: Any = None, key: str = "texts") -> ApiError:
    """One clear 4xx from pydantic's errors: the outermost problem first (the body, then the
    list, then the first bad item), as a reader would fix them. `key`: the body's one list
    (`texts` for predict, `examples` for feedback)."""
    err = min(errors, key=lambda e: len(e.get("loc", ())))
    loc = tuple(err.get("loc", ()))
    loc = loc[1:] if loc[:1] == ("body",) else loc
    kind, ctx = err.get("type", ""), err.get("ctx") or {}
    if kind == "json_invalid":
        pos = loc[0] if loc and isinstance(loc[0], int) else 0
        reason = ctx.get("error", err.get("msg"))
        return ApiError(400, f"malformed JSON: {reason} at {position(body, pos)}")
    if not loc or (loc == (key,) and kind == "missing"):
        raw = isinstance(err.get("input"), bytes)  # a body FastAPI did not read as JSON
        hint = " (send it as Content-Type: application/json)" if raw else ""
        return ApiError(422, OBJECTS[key] + hint, key)
    item = key[:-1]  # text, example
    if loc == (key,):
        if kind == "too_short":
            return ApiError(422, f"{key} is empty: send at least one {item}", key)
        if kind == "too_long":
            n = ctx.get("actual_length") or len(err.get("input") or ())
            return ApiError(422, f"{n} {key}; at most {ctx['max_length']} per request", key)
        kinds = "strings" if key == "texts" else "objects"
        return ApiError(422, f"{key} must be a list of {kinds}", key)
    return item_error(field_name(loc), err)


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
