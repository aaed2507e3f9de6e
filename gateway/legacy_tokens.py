"""Per-client legacy tokens: which user keys a token may report for. Pure (the caller reads the file).

The seed's client can only be configured with its endpoint URL, so a token also travels as a query
parameter: ``https://gw/api/report?token=...``. The token file (``legacy_tokens_file``) has one token per
line with the user keys it may report for, comma-separated::

    # token                 may report for
    7f3a...e1               shop\\till1, shop\\till2
    c0ff...ee               corp\\*
    9d2b...00               *

A scope is a user key (``domain\\login``, compared lower-cased), ``domain\\*`` (every login of that
domain, and only of it: a ``corp\\*`` token cannot write ``hr\\boss``) or ``*`` (anyone). Blank lines and
``#`` comments are ignored. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from typing import Final

from common.settings import SettingsError

ANY: Final = "*"


class TokenScopes:
    """Tokens and the user keys each may report for. Guarantees: :meth:`scopes_of` finds a token by a
    constant-time comparison with every known token; :meth:`allows` is exact on user keys and domains."""

    def __init__(self, entries: dict[str, tuple[str, ...]]) -> None:
        self._entries = [(token.encode(), scopes) for token, scopes in entries.items()]

    def __len__(self) -> int:
        return len(self._entries)

    def scopes_of(self, presented: str) -> tuple[str, ...] | None:
        """The scopes of ``presented``, or None when it is not a known token."""
        if not presented:
            return None
        raw = presented.encode()
        found: tuple[str, ...] | None = None
        for token, scopes in self._entries:
            if hmac.compare_digest(raw, token):
                found = scopes
        return found

    @staticmethod
    def allows(scopes: tuple[str, ...], key: str) -> bool:
        """Whether a token with ``scopes`` may report for the user key ``key`` (lower-cased)."""
        domain = key.rpartition("\\")[0]
        for scope in scopes:
            if scope == ANY or scope == key:
                return True
            if scope.endswith("\\*") and scope[:-2] == domain:
                return True
        return False


def _scope(text: str, line_no: int) -> str:
    scope = text.strip().lower()
    domain, sep, login = scope.rpartition("\\")
    if scope == ANY:
        return scope
    bad_login = not login or ("*" in login and login != "*")
    if not sep or not domain or "\\" in domain or "*" in domain or bad_login:
        raise SettingsError(
            f"legacy_tokens_file line {line_no}: a scope is 'domain\\login', 'domain\\*' or '*'"
        )
    return scope


def parse_token_file(text: str) -> TokenScopes:
    """The tokens of a token file's text; raises :class:`SettingsError` naming the line (never a token)."""
    entries: dict[str, tuple[str, ...]] = {}
    for line_no, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        token, _, rest = body.partition(" ")
        if "\t" in token:
            token, _, more = token.partition("\t")
            rest = more + " " + rest
        scopes = tuple(_scope(s, line_no) for s in rest.replace("\t", " ").split(",") if s.strip())
        if not scopes:
            raise SettingsError(f"legacy_tokens_file line {line_no}: a token needs at least one user scope")
        if len(token) < 16:
            raise SettingsError(f"legacy_tokens_file line {line_no}: tokens must be 16 characters or more")
        if token in entries:
            raise SettingsError(f"legacy_tokens_file line {line_no}: this token is listed twice")
        entries[token] = scopes
    return TokenScopes(entries)


def load_token_file(path: str) -> TokenScopes:
    """Read and parse ``path``; raises :class:`SettingsError` with what to do."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"legacy_tokens_file: cannot read {path!r} ({type(exc).__name__})") from None
    return parse_token_file(text)
