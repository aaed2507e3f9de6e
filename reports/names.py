"""User names the way people type them -> user keys. Pure (the caller passes the keys that exist).

A user key is ``domain\\login`` lower-cased. People type ``alice``, ``Alice`` or ``CORP\\alice``:

- a name with a backslash is a user key (compared lower-cased): found or unknown;
- a bare login resolves when exactly one user key has that login (in any domain); with several it is
  ambiguous and the candidates are listed; with none it is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec


class UserLookup(msgspec.Struct, frozen=True):
    """The outcome of resolving ``name``: ``key`` when exactly one user matches, else ``candidates``
    (several: ambiguous; none: unknown)."""

    name: str
    key: str | None
    candidates: tuple[str, ...] = ()

    @property
    def ambiguous(self) -> bool:
        return self.key is None and len(self.candidates) > 1

    def message(self) -> str:
        """What to tell a person when :attr:`key` is None."""
        if self.ambiguous:
            return f"{self.name!r} matches several users: {', '.join(self.candidates)}; give one of them"
        return f"no user {self.name!r} has any data (list them with `desktrace-report users`)"


def normalise(name: str) -> str:
    """``name`` as user keys are spelled: stripped and lower-cased."""
    return name.strip().lower()


def login_of(key: str) -> str:
    return key.rpartition("\\")[2]


def resolve(name: str, keys: Iterable[str]) -> UserLookup:
    """Resolve ``name`` among the existing user ``keys`` (see the module)."""
    wanted = normalise(name)
    known = sorted(set(keys))
    if "\\" in wanted:
        return UserLookup(name, wanted if wanted in known else None)
    matches = tuple(k for k in known if login_of(k) == wanted)
    if len(matches) == 1:
        return UserLookup(name, matches[0], matches)
    return UserLookup(name, None, matches)
