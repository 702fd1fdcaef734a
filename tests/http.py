"""A small real HTTP client for integration tests (the standard library's, no mocks)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from tests.waiting import scaled

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def assert_error(reply: Any, status: int, code: str) -> dict[str, Any]:
    """`reply` (ours or the in-process driver's) is the API's one error shape, with `code`."""
    assert reply.status == status, reply.body
    body: dict[str, Any] = reply.json
    assert set(body) == {"detail", "error_code", "timestamp"}
    assert body["error_code"] == code and body["detail"]
    assert ISO_MS.match(body["timestamp"])
    return body


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Http:
    def __init__(self, port: int, token: str | None = None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def with_token(self, token: str | None) -> Http:
        return Http(int(self.base.rsplit(":", 1)[1]), token)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 20,
    ) -> Reply:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token is not None:
            request.add_header("Authorization", f"Bearer {self.token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=scaled(timeout)) as response:
                return Reply(response.status, _lower(response.headers), response.read())
        except urllib.error.HTTPError as error:
            return Reply(error.code, _lower(error.headers), error.read())

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def login(self, username: str, password: str) -> Http:
        """This server with the access token of a login (asserted to succeed)."""
        reply = self.post("/api/auth/login", {"username": username, "password": password})
        assert reply.status == 200, reply.body
        return self.with_token(reply.json["access_token"])

    def metrics(self) -> str:
        """`/metrics` as text (asserted to answer)."""
        reply = self.get("/metrics")
        assert reply.status == 200, reply.body
        return reply.body.decode()


def _lower(headers: Any) -> dict[str, str]:
    """Header names in lower case (HTTP names are case-insensitive)."""
    return {str(k).lower(): str(v) for k, v in headers.items()}
