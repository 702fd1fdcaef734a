"""The control channel's messages: one JSON request per connection, one JSON reply.

Requests are msgspec structs tagged by `op`; a reply is `Reply(ok=True, data=...)` or
`Reply(ok=False, status=..., code=..., detail=...)`, whose status and code the REST API passes on.

A request carries only what the user behind it could show the sensor itself, never a worker's
word: a login its password, a refresh or logout the refresh token, a ticket or an ADMIN's
change (`AddUser` ... `CaptureStop`) the user's own access token (`token`), which the
supervisor verifies and whose user's role it reads from the users file. A worker that was
taken over can do no more than the users whose credentials reach it.
"""

from __future__ import annotations

from typing import Any

import msgspec

MAX_MESSAGE_BYTES = 1 << 20


class Request(msgspec.Struct, frozen=True, tag_field="op", forbid_unknown_fields=True):
    pass


class Login(Request, frozen=True, tag="login"):
    username: str
    password: str
    address: str


class Refresh(Request, frozen=True, tag="refresh"):
    refresh_token: str


class Logout(Request, frozen=True, tag="logout"):
    refresh_token: str
    user_id: int


class IssueTicket(Request, frozen=True, tag="issue_ticket"):
    token: str  # the user's access token: the ticket is theirs, and ends when the token does


class RedeemTicket(Request, frozen=True, tag="redeem_ticket"):
    ticket: str


class AddUser(Request, frozen=True, tag="add_user"):
    token: str  # the acting ADMIN's access token
    username: str
    role: str
    password: str
    sensors: list[str] | None = None  # a fleet central's sensors the user may see (None: all)


class UpdateUser(Request, frozen=True, tag="update_user"):
    token: str  # the acting ADMIN's access token
    user_id: int
    role: str | None = None
    password: str | None = None
    sensors: list[str] | msgspec.UnsetType | None = msgspec.UNSET  # None: every sensor


class RemoveUser(Request, frozen=True, tag="remove_user"):
    token: str  # the acting ADMIN's access token
    user_id: int


class CaptureStart(Request, frozen=True, tag="capture_start"):
    token: str  # the acting ADMIN's access token
    interface: str | None = None
    filter: str | None = None


class CaptureStop(Request, frozen=True, tag="capture_stop"):
    token: str


AnyRequest = (
    Login | Refresh | Logout | IssueTicket | RedeemTicket | AddUser | UpdateUser | RemoveUser
    | CaptureStart | CaptureStop
)  # fmt: skip


class Reply(msgspec.Struct, frozen=True, omit_defaults=True):
    ok: bool
    data: Any = None
    status: int = 200
    code: str = ""
    detail: str = ""
    retry_after: float = 0.0


def failure(status: int, code: str, detail: str, retry_after: float = 0.0) -> Reply:
    return Reply(False, None, status, code, detail, retry_after)


encode = msgspec.json.Encoder().encode
decode_request = msgspec.json.Decoder(AnyRequest).decode
decode_reply = msgspec.json.Decoder(Reply).decode
