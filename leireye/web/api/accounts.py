"""/api/auth/* and /api/users: log in, refresh, who am I, log out, tickets; user management."""

from __future__ import annotations

from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from leireye.accounts.users import Role, user_view
from leireye.config import SensorName
from leireye.control.protocol import (
    AddUser,
    IssueTicket,
    Login,
    Logout,
    Refresh,
    RemoveUser,
    UpdateUser,
)
from leireye.web.api.context import access_token, context, path_int, read_body, require
from leireye.web.api.errors import ApiError

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    password: Text


class RefreshBody(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class NewUserBody(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    role: Role
    password: Text
    sensors: list[SensorName] | None = None  # at a fleet central; None: every sensor


class UserPatchBody(msgspec.Struct, forbid_unknown_fields=True):
    role: Role | None = None
    password: Text | None = None
    sensors: list[SensorName] | msgspec.UnsetType | None = msgspec.UNSET  # null: every sensor


def _address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def login(request: Request) -> Response:
    body = await read_body(request, LoginBody)
    control = context(request).control
    tokens = await control.call(Login(body.username, body.password, _address(request)))
    return JSONResponse(tokens, headers={"Cache-Control": "no-store"})


async def refresh(request: Request) -> Response:
    body = await read_body(request, RefreshBody)
    tokens = await context(request).control.call(Refresh(body.refresh_token))
    return JSONResponse(tokens, headers={"Cache-Control": "no-store"})


async def me(request: Request) -> Response:
    principal = require(request)
    return JSONResponse(
        {
            "id": principal.id,
            "username": principal.username,
            "role": principal.role,
            "expires_at": principal.expires_at,
            **({} if principal.sensors is None else {"sensors": list(principal.sensors)}),
        }
    )


async def logout(request: Request) -> Response:
    principal = require(request)
    body = await read_body(request, RefreshBody)
    await context(request).control.call(Logout(body.refresh_token, principal.id))
    return Response(status_code=204)


async def ticket(request: Request) -> Response:
    require(request)
    data = await context(request).control.call(IssueTicket(access_token(request)))
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


# -- users (ADMIN) ------------------------------------------------------------------------------


async def list_users(request: Request) -> Response:
    require(request, "ADMIN")
    users = context(request).authenticator.users.users()
    return JSONResponse({"users": [user_view(u) for u in sorted(users, key=lambda u: u.id)]})


async def get_user(request: Request) -> Response:
    require(request, "ADMIN")
    user_id = path_int(request, "user_id")
    user = context(request).authenticator.users.get(user_id)
    if user is None:
        raise ApiError(404, "NOT_FOUND", f"No such user: {user_id}")
    return JSONResponse(user_view(user))


async def create_user(request: Request) -> Response:
    require(request, "ADMIN")
    body = await read_body(request, NewUserBody)
    add = AddUser(access_token(request), body.username, body.role, body.password, body.sensors)
    data = await context(request).control.call(add)
    return JSONResponse(data, status_code=201)


async def patch_user(request: Request) -> Response:
    require(request, "ADMIN")
    user_id = path_int(request, "user_id")
    body = await read_body(request, UserPatchBody)
    if body.role is None and body.password is None and body.sensors is msgspec.UNSET:
        raise ApiError(
            422, "VALIDATION_ERROR", "Nothing to change: give `role`, `password` or `sensors`"
        )
    update = UpdateUser(access_token(request), user_id, body.role, body.password, body.sensors)
    data = await context(request).control.call(update)
    return JSONResponse(data)


async def delete_user(request: Request) -> Response:
    principal = require(request, "ADMIN")
    user_id = path_int(request, "user_id")
    if user_id == principal.id:
        raise ApiError(409, "CONFLICT", "You cannot remove yourself")
    await context(request).control.call(RemoveUser(access_token(request), user_id))
    return Response(status_code=204)


ROUTES = [
    Route("/api/auth/login", login, methods=["POST"]),
    Route("/api/auth/refresh", refresh, methods=["POST"]),
    Route("/api/auth/me", me, methods=["GET"]),
    Route("/api/auth/logout", logout, methods=["POST"]),
    Route("/api/auth/ticket", ticket, methods=["POST"]),
    Route("/api/users", list_users, methods=["GET"]),
    Route("/api/users", create_user, methods=["POST"]),
    Route("/api/users/{user_id}", get_user, methods=["GET"]),
    Route("/api/users/{user_id}", patch_user, methods=["PATCH"]),
    Route("/api/users/{user_id}", delete_user, methods=["DELETE"]),
]
