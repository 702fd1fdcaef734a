"""The API's one error shape: `{"detail", "error_code", "timestamp"}` with an HTTP status."""

from __future__ import annotations

import datetime as dt
import math

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from leireye.errors import RefusedError

_CODES = {
    400: "BAD_REQUEST",
    401: "AUTH_REQUIRED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


class ApiError(RefusedError):
    """A request the API itself refuses (auth, roles, the body, query parameters)."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, code, detail, headers=headers)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"detail": detail, "error_code": code, "timestamp": now_iso()}
    return JSONResponse(body, status_code=status, headers=headers)


async def refused(request: Request, exc: Exception) -> Response:
    """Any RefusedError: ours (ApiError) or passed on from the supervisor (ControlError)."""
    assert isinstance(exc, RefusedError)
    headers = dict(exc.headers)
    if exc.retry_after > 0:
        headers["Retry-After"] = str(math.ceil(exc.retry_after))
    return error_response(exc.status, exc.code, exc.detail, headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _CODES.get(exc.status_code, "ERROR")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def client_gone(request: Request, exc: Exception) -> Response:
    """The client went away while its body was being read (or the body deadline closed it):
    nobody is left to answer, and it is no error of ours to log with a traceback."""
    return Response(status_code=400)


EXCEPTION_HANDLERS = {
    RefusedError: refused,
    HTTPException: http_error,
    ClientDisconnect: client_gone,
}
