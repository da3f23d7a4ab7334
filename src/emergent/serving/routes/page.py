"""`/`: a page to try each task from a browser (not part of the API's schema)."""

from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import HTMLResponse


def page() -> str:
    """The page as packaged with the service (`static/index.html`)."""
    return files("emergent.serving").joinpath("static/index.html").read_text(encoding="utf-8")


async def index() -> HTMLResponse:
    """The try-it page: it calls `/v1/models` and predict like any client (with the key its
    user types), so it needs no route of its own beyond this one."""
    return HTMLResponse(page())


def add_routes(app: FastAPI) -> None:
    app.add_api_route(
        "/", index, methods=["GET"], response_class=HTMLResponse, include_in_schema=False
    )
