"""Who may read whose reports: the scope of a web login or an API token, from the team file. Pure.

Roles: ``admin`` reads every user, ``lead`` the members of their teams, ``viewer`` their own user key. Without
a team file every web login and every API token is an admin (the behaviour before teams existed). With one,
a web login or named token that the file does not list has an empty scope (it reads nothing); an unnamed
token (a bare entry of ``api_tokens``) stays an admin token.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from common.settings import SettingsError
from reports.teams import TeamFile


class HasUserKey(Protocol):
    @property
    def user_key(self) -> str: ...


R = TypeVar("R", bound=HasUserKey)


@dataclass(frozen=True, slots=True)
class Scope:
    """What one principal may read. ``users is None`` means every user (admin); otherwise exactly the user
    keys in ``users`` (possibly none). ``allows`` and ``only`` are the single place that decides."""

    name: str
    role: str
    users: frozenset[str] | None
    teams: tuple[str, ...] = ()

    @property
    def everyone(self) -> bool:
        return self.users is None

    def allows(self, user_key: str) -> bool:
        return self.users is None or user_key in self.users

    def only(self, rows: Iterable[R]) -> list[R]:
        """The rows whose ``user_key`` this scope may read."""
        return [r for r in rows if self.allows(r.user_key)]

    def sql_users(self) -> list[str] | None:
        """The user keys to restrict a query to (sorted), or None for no restriction."""
        return None if self.users is None else sorted(self.users)


def admin_scope(name: str) -> Scope:
    return Scope(name=name, role="admin", users=None)


class Access:
    """Maps principals (web user names, API token names) to :class:`Scope`s using the team file."""

    def __init__(self, team_file: TeamFile | None) -> None:
        self.team_file = team_file

    @property
    def teams(self) -> list[str]:
        return sorted(self.team_file.teams) if self.team_file else []

    def scope_of(self, name: str | None) -> Scope:
        """The scope of principal ``name``; ``None`` is an unnamed API token (admin)."""
        if name is None or self.team_file is None:
            return admin_scope(name or "token")
        entry = self.team_file.roles.get(name)
        if entry is None:
            return Scope(name=name, role="none", users=frozenset())
        if entry.role == "admin":
            return admin_scope(name)
        if entry.role == "lead":
            return Scope(
                name=name, role="lead", users=self.team_file.members(entry.teams), teams=tuple(entry.teams)
            )
        return Scope(name=name, role="viewer", users=frozenset({entry.user_key}))

    def members(self, team: str) -> frozenset[str] | None:
        """The user keys of ``team``; None when there is no such team."""
        if self.team_file is None or team not in self.team_file.teams:
            return None
        return frozenset(self.team_file.teams[team])

    def teams_of(self, user_key: str) -> list[str]:
        return self.team_file.teams_of(user_key) if self.team_file else []


@dataclass(frozen=True, slots=True)
class ApiToken:
    """One entry of ``api_tokens``: ``name:token`` (scoped by the team file's ``roles.name``) or a bare
    ``token`` (``name`` None: admin)."""

    name: str | None
    token: str


def parse_tokens(items: Sequence[str]) -> list[ApiToken]:
    """``api_tokens`` entries as :class:`ApiToken`s; raises :class:`SettingsError` (never echoing a token)."""
    out = []
    for i, item in enumerate(items, 1):
        name, sep, token = item.partition(":")
        if not sep:
            out.append(ApiToken(None, item))
            continue
        if not name.strip() or not token.strip():
            raise SettingsError(f"api_tokens entry {i} must be token or name:token")
        out.append(ApiToken(name.strip(), token.strip()))
    return out


def match_token(presented: str, tokens: Iterable[ApiToken]) -> ApiToken | None:
    """The entry whose token equals ``presented`` (every entry compared in constant time), or None."""
    found = None
    if not presented:
        return None
    for t in tokens:
        if hmac.compare_digest(presented.encode(), t.token.encode()):
            found = t
    return found
