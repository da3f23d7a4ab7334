"""The parts of the routes' signatures a service's settings decide, and `typed`, which gives a
module-level route them.

FastAPI validates and documents a route by its signature: the predict and feedback bodies
carry this service's limits (`max_texts`, `max_chars`) into their schema, and a task
parameter lists the served tasks. Those types exist only once the settings do, so the routes
declare plain types and each app registers a copy of them with these in place.
"""

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Annotated, Any, ParamSpec, TypeVar

from fastapi import Body, Path, Query

from emergent.serving.settings import Settings
from emergent.serving.validation import feedback_model, request_model

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Signatures:
    """The annotations one service's routes take (see the module's docstring)."""

    task: Any  # a served task, in the path
    one_task: Any  # one served task or none, in the query
    predict_body: Any
    feedback_body: Any

    @classmethod
    def of(cls, settings: Settings) -> "Signatures":
        # the schema lists the served tasks; another name is still a 404 naming them (not a 422)
        served = {"enum": list(settings.sources)}
        predict = request_model(settings.max_texts, settings.max_chars)
        feedback = feedback_model(settings.max_texts, settings.max_chars)
        return cls(
            task=Annotated[str, Path(description="A served task", json_schema_extra=served)],
            one_task=Annotated[
                str | None,
                Query(description="One served task (default: all)", json_schema_extra=served),
            ],
            predict_body=Annotated[predict, Body()],
            feedback_body=Annotated[feedback, Body()],
        )


def typed(route: Callable[P, Awaitable[R]], **annotations: Any) -> Callable[P, Awaitable[R]]:
    """A copy of `route` whose parameters named in `annotations` have those types instead
    (FastAPI reads a route's `__signature__`); the route itself is left as declared, so every
    app gets its own copy."""
    signature = inspect.signature(route, eval_str=True)
    unknown = set(annotations) - set(signature.parameters)
    if unknown:
        raise TypeError(f"{route.__name__} has no parameter {', '.join(sorted(unknown))}")
    parameters = [
        p.replace(annotation=annotations.get(p.name, p.annotation))
        for p in signature.parameters.values()
    ]

    @wraps(route)
    async def copy(*args: P.args, **kwargs: P.kwargs) -> R:
        return await route(*args, **kwargs)

    copy.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return copy
