"""The team file: which user keys belong to which team, and which role each web login (or named API token)
has. TOML or JSON (by the file's suffix; ``.json`` is JSON, anything else TOML). Pure parsing, no I/O beyond
reading the one file.

    [teams]
    sales = ["corp\\\\alice", "corp\\\\bob"]
    support = ["corp\\\\carol"]

    [roles.boss]                 # a web user name or the name of an API token (name:token in api_tokens)
    role = "admin"               # every user
    [roles.sally]
    role = "lead"                # the members of her teams
    teams = ["sales"]
    [roles.alice]
    role = "viewer"              # her own user key only
    user_key = "corp\\\\alice"
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import msgspec

Role = Literal["admin", "lead", "viewer"]
ROLES: tuple[str, ...] = ("admin", "lead", "viewer")


class TeamFileError(ValueError):
    """The team file is missing or malformed; the message names the file and the entry."""


class RoleEntry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One login's role: ``lead`` needs ``teams``, ``viewer`` needs ``user_key``."""

    role: Role
    teams: list[str] = []
    user_key: str = ""


class TeamFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The parsed team file. Guarantees (checked by :func:`parse_team_file`): every team a lead names exists,
    every viewer has a user key, team names and user keys are non-empty."""

    teams: dict[str, list[str]] = {}
    roles: dict[str, RoleEntry] = {}

    def members(self, teams: Iterable[str]) -> frozenset[str]:
        """The user keys of ``teams`` (unknown team names add nobody)."""
        out: set[str] = set()
        for t in teams:
            out.update(self.teams.get(t, ()))
        return frozenset(out)

    def teams_of(self, user_key: str) -> list[str]:
        """The teams ``user_key`` belongs to, sorted."""
        return sorted(t for t, keys in self.teams.items() if user_key in keys)


def parse_team_file(text: str, *, is_json: bool = False, source: str = "team file") -> TeamFile:
    """Parse and check the text of a team file; raises :class:`TeamFileError` naming what is wrong."""
    try:
        raw = json.loads(text) if is_json else tomllib.loads(text)
        parsed = msgspec.convert(raw, TeamFile)
    except (ValueError, msgspec.ValidationError) as exc:
        raise TeamFileError(f"{source}: {exc}") from None
    for team, keys in parsed.teams.items():
        if not team.strip():
            raise TeamFileError(f"{source}: a team has an empty name")
        if any(not k.strip() for k in keys):
            raise TeamFileError(f"{source}: team {team!r} lists an empty user key")
    for name, entry in parsed.roles.items():
        if entry.role == "lead":
            if not entry.teams:
                raise TeamFileError(f"{source}: roles.{name}: a lead needs teams = [...]")
            unknown = [t for t in entry.teams if t not in parsed.teams]
            if unknown:
                raise TeamFileError(f"{source}: roles.{name}: unknown team(s) {', '.join(unknown)}")
        if entry.role == "viewer" and not entry.user_key.strip():
            raise TeamFileError(f'{source}: roles.{name}: a viewer needs user_key = "domain\\\\login"')
    return parsed


def load_team_file(path: str) -> TeamFile:
    """Read and parse the team file at ``path`` (JSON when it ends in ``.json``, else TOML)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TeamFileError(f"cannot read the team file {path}: {exc.strerror or exc}") from None
    return parse_team_file(text, is_json=path.lower().endswith(".json"), source=path)
