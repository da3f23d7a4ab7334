"""The service's one error type: an HTTP status with one clear message."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from emergent.serving.limits import retry_after


class ApiError(Exception):
    """An HTTP error with one clear message (and the offending field, where there is one)."""

    def __init__(
        self, status: int, detail: str, field: str | None = None, retry: float | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.field, self.retry = status, detail, field, retry

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"detail": self.detail}
        if self.field:
            body["field"] = self.field
        headers = {"Retry-After": retry_after(self.retry)} if self.retry is not None else None
        return JSONResponse(body, status_code=self.status, headers=headers)
