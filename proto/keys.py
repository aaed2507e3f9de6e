"""The user-key rule of ``shared/spec/sessions.md``."""

from __future__ import annotations


def user_key(domain: str, login: str) -> str:
    """``domain\\login`` lower-cased: the Kafka key of every raw event and the identity sessions are per.

    ``domain`` is the account's domain, or the computer name for a local or workgroup account.
    """
    return f"{domain}\\{login}".lower()


def event_user_key(event: object) -> str:
    """The user key of a raw event (anything with ``domain`` and ``user``)."""
    return user_key(event.domain, event.user)  # type: ignore[attr-defined]
