"""How refused requests answer: the library's errors as JSON with a status.

Every refusal answers ``{"error": code, "message": text, ...fields}`` with
camelCase field names, from `FleetsError.to_dict`. The status comes from the
error's class (see docs/http-api.md); malformed JSON and wrong types answer
422 ``invalid_request``. Anything unexpected answers 500 ``internal_error``
and is logged: that is a bug of the server, never the client's fault.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..adapters.websocket import camel_case, to_camel
from ..errors import (
    FleetsError,
    GroupExists,
    InvalidRequest,
    MessageTooLarge,
    NotAllowed,
    NotAMember,
    NotFound,
    StoreError,
)
from .auth import Unauthorized

__all__ = ["error_body", "install_error_handlers", "status_of"]

logger = logging.getLogger(__name__)

# The names of the library's arguments as the HTTP API calls them.
_FIELD_NAMES = {
    "from_seq": "fromSequence",
    "since_version": "since",
    "after_id": "after",
}

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "not_allowed",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "invalid_request",
}


def status_of(error: FleetsError) -> int:
    """Returns the HTTP status of a library error."""
    if isinstance(error, MessageTooLarge):
        return 413
    if isinstance(error, InvalidRequest):
        return 400
    if isinstance(error, NotAMember | NotAllowed):
        return 403
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, GroupExists):
        return 409
    if isinstance(error, StoreError):
        return 503 if error.transient else 500
    return 400


def error_body(code: str, message: str, **fields: Any) -> dict[str, Any]:
    """Returns the JSON body of a refusal."""
    return {"error": code, "message": message, **camel_case(fields)}


def _fleets_body(error: FleetsError) -> dict[str, Any]:
    body: dict[str, Any] = camel_case(error.to_dict())
    field = body.get("field")
    if isinstance(field, str):
        body["field"] = _FIELD_NAMES.get(field, to_camel(field))
    return body


def _validation_details(errors: Any) -> list[dict[str, Any]]:
    # Only the location, text and type: the input and ctx may not be JSON.
    details = []
    for item in errors:
        if isinstance(item, Mapping):
            details.append(
                {
                    "loc": [str(part) for part in item.get("loc", ())],
                    "msg": str(item.get("msg", "")),
                    "type": str(item.get("type", "")),
                }
            )
    return details


def install_error_handlers(app: FastAPI) -> None:
    """Registers the handlers that turn exceptions into JSON refusals."""

    @app.exception_handler(FleetsError)
    async def on_fleets_error(request: Request, exc: FleetsError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            logger.warning(
                "%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc
            )
        headers = {"Retry-After": "1"} if status == 503 else None
        return JSONResponse(_fleets_body(exc), status_code=status, headers=headers)

    @app.exception_handler(Unauthorized)
    async def on_unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        return JSONResponse(
            error_body(Unauthorized.code, str(exc)),
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(
        request: Request, exc: RequestValidationError
    ) -> JSONResponse:
        details = _validation_details(exc.errors())
        first: dict[str, Any] = {"loc": [], "msg": "", "type": ""}
        if details:
            first = details[0]
        loc: list[str] = first["loc"]
        field = loc[-1] if len(loc) > 1 else None
        if first["type"] == "json_invalid":
            text, field = "the body is not valid JSON", None
        elif first["type"] == "model_attributes_type" and loc == ["body"]:
            text = "the body must be a JSON object"
        elif field is not None:
            text = f"{'.'.join(loc[1:])}: {first['msg']}"
        else:
            text = str(first["msg"]) or "invalid request"
        body = error_body("invalid_request", text, details=details)
        body["field"] = field
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(
        request: Request, exc: StarletteHTTPException
    ) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        if exc.status_code == 400:
            # FastAPI answers 400 when a body is not JSON at all (bad UTF-8,
            # nesting past the parser's depth): the same case as malformed
            # JSON, which the API answers with 422.
            detail = {"type": "json_invalid", "loc": ["body"], "msg": str(exc.detail)}
            return JSONResponse(
                error_body("invalid_request", str(exc.detail), details=[detail]),
                status_code=422,
            )
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error(
            "%s %s failed unexpectedly", request.method, request.url.path, exc_info=exc
        )
        return JSONResponse(
            error_body("internal_error", "the server failed; this is a bug"),
            status_code=500,
        )
