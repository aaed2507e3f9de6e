"""Who is asking: a web session (cookie, not revoked) or an API token, and the :class:`Scope` it reads with.
Every page and endpoint decides which user keys it may read here and nowhere else."""

from __future__ import annotations

from collections.abc import Sequence

from litestar.connection import ASGIConnection
from litestar.exceptions import NotFoundException, PermissionDeniedException

from gateway.access import Scope, match_token
from gateway.auth import COOKIE_NAME, SessionInfo, bearer
from gateway.state import gw


def session_info(connection: ASGIConnection) -> SessionInfo | None:
    """The session of a valid, unexpired, not logged-out cookie of a configured user, else None."""
    g = gw(connection)
    info = g.signer.check_session(connection.cookies.get(COOKIE_NAME), g.epoch_s())
    if info is None or info.user not in g.users or g.revoked.is_revoked(info.sid):
        return None
    return info


def session_user(connection: ASGIConnection) -> str | None:
    """The user of a valid session cookie, else None."""
    info = session_info(connection)
    return None if info is None else info.user


def token_scope(connection: ASGIConnection) -> Scope | None:
    """The scope of the request's ``Authorization: Bearer`` token, else None."""
    g = gw(connection)
    token = match_token(bearer(connection.headers.get("authorization")), g.api_tokens)
    return None if token is None else g.access.scope_of(token.name)


def session_scope(connection: ASGIConnection) -> Scope | None:
    user = session_user(connection)
    return None if user is None else gw(connection).access.scope_of(user)


def request_scope(connection: ASGIConnection) -> Scope | None:
    """A token's scope, else the web login's, else None (not authenticated)."""
    return token_scope(connection) or session_scope(connection)


def check_user(scope: Scope, user_key: str) -> None:
    """Raise 403 unless ``scope`` may read ``user_key`` (the same answer whether the user exists or not)."""
    if not scope.allows(user_key):
        raise PermissionDeniedException(
            detail=f"{scope.name} ({scope.role}) may not read this user's reports"
        )


def readable_users(
    connection: ASGIConnection, scope: Scope, user: str | None = None, team: str | None = None
) -> Sequence[str] | None:
    """The user keys a report may read for ``scope``, narrowed to ``user`` and/or ``team``: None means
    everyone, an empty list nobody. 403 for a user or team outside the scope, 404 for an unknown team."""
    if user:
        check_user(scope, user)
    if team:
        if not scope.everyone and team not in scope.teams:
            raise PermissionDeniedException(detail=f"{scope.name} ({scope.role}) may not read team {team!r}")
        members = gw(connection).access.members(team)
        if members is None:
            raise NotFoundException(detail=f"no team {team!r} in the team file")
        keys = set(members) if scope.users is None else set(members) & scope.users
        if user:
            keys &= {user}
        return sorted(keys)
    if user:
        return [user]
    return scope.sql_users()
