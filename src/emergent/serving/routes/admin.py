"""`POST /admin/reload`: resolve the models again (a new registry alias target, a new export)
and swap them in without a restart; the continuous-training loop calls it after a promotion."""

from typing import Any

from fastapi import Depends, FastAPI

from emergent.serving.admission import ServiceDep, admin_caller, not_ready, unknown_task
from emergent.serving.api_error import ApiError
from emergent.serving.routes.signatures import Signatures, typed
from emergent.serving.slots import ModelLoadError


async def reload(service: ServiceDep, task: str | None = None) -> dict[str, Any]:
    """Only for a key with the admin scope (`admin_caller`). 409 when a model fails to load:
    the previous one keeps serving, so a bad package never takes a task down."""
    if not service.ready:
        raise not_ready(service)
    if task is not None and task not in service.slots:
        raise unknown_task(service, task)
    try:
        return {"reloaded": await service.reload([task] if task else service.tasks)}
    except ModelLoadError as err:
        raise ApiError(409, f"reload failed, previous model kept: {err}") from err


def add_routes(app: FastAPI, signatures: Signatures) -> None:
    app.add_api_route(
        "/admin/reload",
        typed(reload, task=signatures.one_task),
        methods=["POST"],
        dependencies=[Depends(admin_caller)],
        summary="Resolve the models again and swap them in atomically",
    )
