"""Credentials: password hashes (scrypt, PBKDF2), signed session cookies, Bearer tokens. Pure: callers pass
the time; every comparison of secrets is constant-time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple

from common.settings import SettingsError

SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
_DUMMY_HASH: Final = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
COOKIE_NAME: Final = "desktrace_session"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` of ``password`` (what ``web_users`` holds)."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (a hash, or a plain password); constant-time compare."""
    try:
        if stored.startswith("scrypt$"):
            _, n, r, p, salt, want = stored.split("$")
            got = hashlib.scrypt(
                password.encode(),
                salt=_unb64(salt),
                n=int(n),
                r=int(r),
                p=int(p),
                dklen=len(_unb64(want)),
                maxmem=256 * 1024 * 1024,
            )
            return hmac.compare_digest(got, _unb64(want))
        if stored.startswith("pbkdf2_sha256$"):
            _, iterations, salt, want = stored.split("$")
            got = hashlib.pbkdf2_hmac(
                "sha256", password.encode(), _unb64(salt), int(iterations), dklen=len(_unb64(want))
            )
            return hmac.compare_digest(got, _unb64(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(password.encode(), stored.encode())


def parse_users(web_users: str, web_password: str) -> dict[str, str]:
    """User name -> stored password from ``web_users`` (``name:hash,...``) or, when empty, ``admin`` with
    ``web_password``. Raises :class:`SettingsError` (naming the entry's position, never its secret)."""
    users: dict[str, str] = {}
    for i, item in enumerate((p.strip() for p in web_users.split(",")), 1):
        if not item:
            continue
        name, sep, stored = item.partition(":")
        if not sep or not name.strip() or not stored:
            raise SettingsError(f"web_users entry {i} must be name:password-hash")
        users[name.strip()] = stored
    if not users and web_password:
        users["admin"] = web_password
    return users


def check_login(users: Mapping[str, str], name: str, password: str) -> bool:
    """Whether ``name``/``password`` is a valid login; an unknown name costs the same hash work."""
    stored = users.get(name)
    if stored is None:
        verify_password(password, _DUMMY_HASH)
        return False
    return verify_password(password, stored)


def check_token(presented: str, tokens: Iterable[str]) -> bool:
    """Whether ``presented`` equals one of ``tokens`` (each compared in constant time)."""
    if not presented:
        return False
    ok = False
    for token in tokens:
        ok |= hmac.compare_digest(presented.encode(), token.encode())
    return ok


def bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or ''."""
    if not authorization:
        return ""
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class SessionInfo(NamedTuple):
    """What a valid session cookie says: who, its random id (what a logout revokes) and its expiry."""

    user: str
    sid: str
    exp: int


class SessionSigner:
    """Signs and checks session cookies: ``payload.signature`` with HMAC-SHA256 over the payload (user name,
    a random session id and the expiry, seconds since the epoch). A cookie is valid only with the same key and
    before its expiry; the session id lets a logout revoke it server-side."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, user: str, now: float, lifetime_s: float) -> str:
        data = {"u": user, "sid": secrets.token_urlsafe(16), "exp": int(now + lifetime_s)}
        payload = _b64(json.dumps(data, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def check(self, cookie: str | None, now: float) -> str | None:
        """The user name of a valid, unexpired cookie, else None."""
        info = self.check_session(cookie, now)
        return None if info is None else info.user

    def check_session(self, cookie: str | None, now: float) -> SessionInfo | None:
        """The :class:`SessionInfo` of a valid, unexpired cookie, else None."""
        if not cookie or "." not in cookie:
            return None
        payload, _, sig = cookie.rpartition(".")
        if not hmac.compare_digest(sig.encode(), self._sign(payload).encode()):
            return None
        try:
            data = json.loads(_unb64(payload))
            user, exp, sid = data["u"], data["exp"], data["sid"]
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if (
            not isinstance(user, str)
            or not isinstance(exp, int)
            or not isinstance(sid, str)
            or not sid
            or exp < now
        ):
            return None
        return SessionInfo(user, sid, exp)
