"""The service's routes, one module per concern, each adding its routes to the app with
`add_routes`: health (liveness, readiness, metrics, the served models), predict, feedback,
admin (reload) and the page.

The routes are module-level functions; what a service's settings decide in their signatures
(the served tasks, the body limits) reaches them through `signatures.typed`. They are added
to the app itself, not through `include_router`, so each is one `APIRoute` of `Route`.
"""

from typing import Any

from fastapi.routing import APIRoute


class Route(APIRoute):
    """An APIRoute whose endpoint's docstring stays out of the OpenAPI schema: the schema's
    words are each route's `summary` and `responses`; the docstring says why, to the code's
    reader. A `description` given to the route is kept."""

    def __init__(
        self, path: str, endpoint: Any, *, description: str | None = None, **kw: Any
    ) -> None:
        super().__init__(path, endpoint, description=description, **kw)
        if description is None:
            self.description = ""
