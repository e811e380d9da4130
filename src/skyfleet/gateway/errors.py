"""OpenAI-shaped error responses."""

from __future__ import annotations

import json

from aiohttp import web

from skyfleet.policy.outcome import Outcome

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> bytes:
    """`{"error": {"message", "type", "param", "code"}}` as OpenAI sends it."""
    etype = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    err = {"message": message, "type": etype, "param": param, "code": code}
    return json.dumps({"error": err}).encode()


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    retry_after_s: float | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error response from the gateway itself (marked with x-skyfleet-error-source)."""
    h = {"x-skyfleet-error-source": "gateway"}
    if headers:
        h.update(headers)
    if retry_after_s is not None:
        h["Retry-After"] = str(max(1, round(retry_after_s)))
    return web.Response(
        status=status,
        body=error_body(status, message, param=param, code=code),
        content_type="application/json",
        headers=h,
    )


class GatewayError(Exception):
    """A request the gateway itself refuses (auth, size, JSON, model, admission)."""

    def __init__(
        self,
        outcome: Outcome,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.outcome, self.status, self.message = outcome, status, message
        self.param, self.code = param, code
        self.retry_after_s, self.headers = retry_after_s, headers

    def response(self) -> web.Response:
        """The OpenAI-shaped error response."""
        return error_response(
            self.status,
            self.message,
            param=self.param,
            code=self.code,
            retry_after_s=self.retry_after_s,
            headers=self.headers,
        )
