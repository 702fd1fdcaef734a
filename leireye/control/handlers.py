"""What the supervisor answers on the control channel: accounts, users, capture start/stop.

Every refusal becomes a `Reply` with the HTTP status and error code the REST API passes on;
the handlers never let an expected error escape (the server turns a bug into a 500).

Nothing a worker says about a user is believed: a ticket is issued, and an ADMIN's change made,
only for the holder of a valid access token, verified here against the secret and the users
file (whose role applies, not the token's or the worker's).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import msgspec

from leireye.accounts.principal import AuthFailure, Principal
from leireye.accounts.service import AccountError, AccountService
from leireye.accounts.useredit import (
    UserEditError,
    add_user,
    edit_users_file,
    remove_user,
    update_user,
)
from leireye.accounts.users import User, UserStore, user_view
from leireye.config import Config
from leireye.control.protocol import (
    AddUser,
    AnyRequest,
    CaptureStart,
    CaptureStop,
    IssueTicket,
    Login,
    Logout,
    RedeemTicket,
    Refresh,
    RemoveUser,
    Reply,
    UpdateUser,
    failure,
)
from leireye.errors import CaptureError, LeirEyeError

log = logging.getLogger("leireye.control")

EDIT_STATUS = {"conflict": 409, "not_found": 404, "invalid": 422}
EDIT_CODE = {"conflict": "CONFLICT", "not_found": "NOT_FOUND", "invalid": "VALIDATION_ERROR"}


class CaptureControl(Protocol):
    def start_capture(self, interface: str | None, bpf: str | None) -> dict[str, Any]: ...

    def stop_capture(self) -> dict[str, Any]: ...


class CaptureConflict(LeirEyeError):
    """A start or stop that would change nothing (409)."""


class ControlHandlers:
    def __init__(
        self,
        accounts: AccountService,
        users_path: Path,
        capture: CaptureControl,
        users_changed: Callable[[], object] = lambda: None,
    ) -> None:
        self.accounts = accounts
        self.users_path = users_path
        self.capture = capture
        self.users_changed = users_changed  # e.g. rewrite the workers' users view now

    @classmethod
    def for_config(
        cls,
        config: Config,
        secret: bytes,
        capture: CaptureControl,
        users_changed: Callable[[], object] = lambda: None,
    ) -> ControlHandlers:
        """The supervisor's handlers: accounts over the users file of `config` (refresh tokens
        kept in `refresh-tokens.json` in `state_dir`), capture requests passed to `capture`."""
        users_file = config.state_path(config.auth.users_file)
        refresh_store = config.state_path("refresh-tokens.json")
        accounts = AccountService(config, secret, UserStore(users_file), refresh_store, time.time)
        return cls(accounts, users_file, capture, users_changed)

    def __call__(self, request: AnyRequest) -> Reply:
        try:
            return Reply(True, self._handle(request))
        except AccountError as exc:
            return failure(exc.status, exc.code, exc.detail, exc.retry_after)
        except UserEditError as exc:
            return failure(EDIT_STATUS[exc.kind], EDIT_CODE[exc.kind], str(exc))
        except CaptureConflict as exc:
            return failure(409, "CONFLICT", str(exc))
        except CaptureError as exc:
            code = "INVALID_BPF" if "BPF" in str(exc) else "CAPTURE_ERROR"
            return failure(400, code, str(exc))
        except LeirEyeError as exc:  # e.g. the users file is invalid
            log.error("control %s: %s", type(request).__name__, exc)
            return failure(500, "INTERNAL_ERROR", str(exc))

    def _handle(self, request: AnyRequest) -> Any:
        accounts = self.accounts
        match request:
            case Login(username, password, address):
                return msgspec.to_builtins(accounts.login(username, password, address))
            case Refresh(token):
                return msgspec.to_builtins(accounts.refresh(token))
            case Logout(token, user_id):
                return {"revoked": accounts.logout(token, user_id)}
            case IssueTicket(token):
                principal = self._holder(token)
                expires_at = 2.0**40 if principal.expires_at is None else principal.expires_at
                ticket, ttl = accounts.issue_ticket(principal.id, principal.generation, expires_at)
                return {"ticket": ticket, "expires_in": ttl}
            case RedeemTicket(ticket):
                grant = accounts.redeem_ticket(ticket)
                return {"user_id": grant.user_id, "generation": grant.generation,
                        "expires_at": grant.expires_at,
                        "session_expires_at": grant.session_expires_at}  # fmt: skip
            case AddUser(token, username, role, password, sensors):
                admin = self._admin(token)
                user = self._edit(lambda users: add_user(users, username, role, password, sensors))
                log.info("user %s added (%s) by %s", user.username, user.role, admin.username)
                return user_view(user)
            case UpdateUser(token, user_id, role, password, sensors):
                admin = self._admin(token)
                user = self._edit(
                    lambda users: update_user(
                        users, user_id, role=role, password=password, sensors=sensors
                    )
                )
                if password is not None:
                    accounts.forget_user(user.id)
                log.info("user %s changed by %s", user.username, admin.username)
                return user_view(user)
            case RemoveUser(token, user_id):
                admin = self._admin(token)
                if user_id == admin.id:
                    raise AccountError(409, "CONFLICT", "You cannot remove yourself")
                user = self._edit(lambda users: remove_user(users, user_id))
                accounts.forget_user(user.id)
                log.info("user %s removed by %s", user.username, admin.username)
                return user_view(user)
            case CaptureStart(token, interface, bpf):
                self._admin(token)
                return self.capture.start_capture(interface, bpf)
            case CaptureStop(token):
                self._admin(token)
                return self.capture.stop_capture()
        raise AssertionError(f"unhandled control request {request!r}")

    def _holder(self, token: str) -> Principal:
        """The user of a valid access token, as the users file has them now."""
        result = self.accounts.verifier.verify(token, self.accounts.clock())
        if isinstance(result, AuthFailure):
            raise AccountError(401, "INVALID_TOKEN", "Invalid or expired token")
        return result

    def _admin(self, token: str) -> Principal:
        principal = self._holder(token)
        if principal.role != "ADMIN":
            raise AccountError(403, "FORBIDDEN", f"This needs the ADMIN role (you are "
                               f"{principal.role})")  # fmt: skip
        return principal

    def _edit(self, edit: Any) -> User:
        user: User = edit_users_file(self.users_path, edit)
        self.accounts.users.refresh()
        self.users_changed()
        return user
