"""What the agent may record about a window: app and domain include/exclude lists, URL trimming,
redaction, and extended-mode field values (never a password). Pure: no I/O, no clock.

The recorder applies :class:`PrivacyFilter` to every :class:`~agent.observations.WindowSnapshot` before
anything else, so nothing it drops or redacts ever reaches an event, the spool or Kafka.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from agent.observations import WindowSnapshot
from proto.events import FieldValue, UiNode

#: What a redacted match is replaced with.
REDACTED = "[redacted]"

#: Field names that mark a password field even when the platform does not flag it (defence in depth).
PASSWORD_NAME = re.compile(
    r"pass(?:word|wort|wd|code|phrase)|\bpass\b|\bpwd\b|\bpin\b|mot de passe|contrase\u00f1a", re.I
)


class PrivacySettingsError(ValueError):
    """A privacy setting is malformed (e.g. a redaction pattern that is not a regular expression)."""


def _as_list(value: Any) -> list[str]:
    """A list setting: a list (TOML array) or comma-separated text."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(s).strip() for s in items if str(s).strip()]


def _as_patterns(value: Any) -> list[str]:
    """Redaction patterns: a list (TOML array), a JSON array in text, or text with one pattern per line.
    Never split on commas: regular expressions contain them (``\\d{3,4}``)."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if isinstance(parsed, list):
                return [str(p) for p in parsed if str(p)]
        return [line for line in (s.strip() for s in text.splitlines()) if line]
    return [str(p) for p in value if str(p)]


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def app_names(snapshot: WindowSnapshot) -> set[str]:
    """Names an app list entry can match, lower case: the program name and the executable's path, each also
    as a file name with and without its extension (``C:\\...\\chrome.exe``, ``chrome.exe``, ``chrome``)."""
    names: set[str] = set()
    for text in (snapshot.app, snapshot.exe_path):
        if text:
            path = text.lower()
            base = re.split(r"[\\/]", path)[-1]
            names |= {path, base, base.rsplit(".", 1)[0] if "." in base else base}
    return names


def url_host(url: str) -> str:
    """The host name of ``url`` (lower case, no port, no trailing dot); "" when there is none. A URL
    without a scheme (as address bars show them: ``example.com/path``) is read as ``http://``."""
    if not url:
        return ""
    text = url.strip()
    if "://" not in text and not text.lower().startswith(("about:", "data:", "file:", "mailto:")):
        text = "http://" + text
    try:
        host = urlsplit(text).hostname or ""
    except ValueError:
        return ""
    return host.rstrip(".").lower()


def domain_matches(host: str, domain: str) -> bool:
    """``host`` is ``domain`` or one of its subdomains (``mail.example.com`` matches ``example.com``)."""
    domain = domain.strip().lstrip(".").rstrip(".").lower()
    if domain.startswith("*."):
        domain = domain[2:]
    return bool(host) and bool(domain) and (host == domain or host.endswith("." + domain))


def strip_query(url: str) -> str:
    """``url`` without its query string and fragment (``https://a.b/p?q=1#x`` -> ``https://a.b/p``)."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


@dataclass(frozen=True)
class PrivacyFilter:
    """Decides what of a window snapshot may be recorded.

    Guarantees of :meth:`apply`:

    - it returns None (nothing is recorded about the window) when the app is in ``exclude_apps``, or an
      ``include_apps`` list is set and the app is not in it, or the URL's host is (a subdomain of) a domain
      in ``exclude_domains``, or an ``include_domains`` list is set and the window shows a URL whose host is
      not in it; apps match the program name or the executable's name/path, case-insensitively;
    - the URL keeps no query string and no fragment unless ``keep_query``;
    - every ``redact`` pattern is replaced by ``[redacted]`` in the title, tab, URL, file path, sheet,
      hierarchy names and (extended mode) field names and values;
    - ``fields`` is None unless ``extended_mode``; in extended mode a field marked ``password`` never keeps
      a value (forced to None, ``edited`` kept), whatever the source delivered; a field whose name looks
      like a password (``password``, ``passwd``, ``pwd``, ``PIN``, ...) is treated as a password field;
    - the input snapshot is never modified: a changed copy is returned.
    """

    include_apps: frozenset[str] = frozenset()
    exclude_apps: frozenset[str] = frozenset()
    include_domains: tuple[str, ...] = ()
    exclude_domains: tuple[str, ...] = ()
    redact: tuple[re.Pattern[str], ...] = ()
    keep_query: bool = False
    extended_mode: bool = False

    @classmethod
    def create(
        cls,
        *,
        include_apps: Iterable[str] = (),
        exclude_apps: Iterable[str] = (),
        include_domains: Iterable[str] = (),
        exclude_domains: Iterable[str] = (),
        redact: Iterable[str] = (),
        keep_query: bool = False,
        extended_mode: bool = False,
    ) -> PrivacyFilter:
        """Build a filter from plain lists; a bad regular expression raises :class:`PrivacySettingsError`."""
        patterns = []
        for p in redact:
            try:
                patterns.append(re.compile(p))
            except re.error as exc:
                raise PrivacySettingsError(
                    f"privacy_redact pattern {p!r} is not a regular expression: {exc}"
                ) from None
        return cls(
            include_apps=frozenset(a.lower() for a in include_apps),
            exclude_apps=frozenset(a.lower() for a in exclude_apps),
            include_domains=tuple(d.lower() for d in include_domains),
            exclude_domains=tuple(d.lower() for d in exclude_domains),
            redact=tuple(patterns),
            keep_query=keep_query,
            extended_mode=extended_mode,
        )

    @classmethod
    def from_settings(cls, settings: Any) -> PrivacyFilter:
        """Read ``privacy_include_apps``, ``privacy_exclude_apps``, ``privacy_include_domains``,
        ``privacy_exclude_domains``, ``privacy_redact``, ``privacy_keep_query`` and ``extended_mode`` from an
        object's attributes or a mapping's keys (missing ones take their defaults). The agent settings'
        ``exclude_apps`` / ``exclude_domains`` are read too and add to the privacy_* lists."""

        def get(name: str) -> Any:
            if isinstance(settings, Mapping):
                return settings.get(name)
            return getattr(settings, name, None)

        return cls.create(
            include_apps=_as_list(get("privacy_include_apps")),
            exclude_apps=_as_list(get("privacy_exclude_apps")) + _as_list(get("exclude_apps")),
            include_domains=_as_list(get("privacy_include_domains")),
            exclude_domains=_as_list(get("privacy_exclude_domains")) + _as_list(get("exclude_domains")),
            redact=_as_patterns(get("privacy_redact")),
            keep_query=_as_bool(get("privacy_keep_query")),
            extended_mode=_as_bool(get("extended_mode")),
        )

    # ---- decisions -----------------------------------------------------------------------------------

    def allows(self, snapshot: WindowSnapshot) -> bool:
        """Whether anything may be recorded about this window (the include/exclude lists)."""
        names = app_names(snapshot)
        if names & self.exclude_apps:
            return False
        if self.include_apps and not names & self.include_apps:
            return False
        host = url_host(snapshot.url)
        if host and any(domain_matches(host, d) for d in self.exclude_domains):
            return False
        if self.include_domains and host:
            return any(domain_matches(host, d) for d in self.include_domains)
        return True

    def apply(self, snapshot: WindowSnapshot) -> WindowSnapshot | None:
        """The snapshot as it may be recorded, or None when the window must not be recorded at all."""
        if not self.allows(snapshot):
            return None
        url = snapshot.url if self.keep_query else strip_query(snapshot.url)
        fields: list[FieldValue] | None = None
        if self.extended_mode and snapshot.fields is not None:
            fields = [self._field(f) for f in snapshot.fields]
        return msgspec.structs.replace(
            snapshot,
            title=self._redact(snapshot.title),
            tab=self._redact(snapshot.tab),
            url=self._redact(url),
            file_path=self._redact(snapshot.file_path),
            sheet=self._redact(snapshot.sheet),
            hierarchy=[
                UiNode(name=self._redact(n.name), control_type=n.control_type) for n in snapshot.hierarchy
            ],
            fields=fields,
        )

    def _field(self, f: FieldValue) -> FieldValue:
        if f.password or PASSWORD_NAME.search(f.name):
            return FieldValue(name=self._redact(f.name), control_type=f.control_type, value=None,
                              edited=f.edited, password=True)
        value = self._redact(f.value) if f.value is not None else None
        return FieldValue(name=self._redact(f.name), control_type=f.control_type, value=value,
                          edited=f.edited, password=False)

    def _redact(self, text: str) -> str:
        for pattern in self.redact:
            text = pattern.sub(REDACTED, text)
        return text


__all__ = [
    "PASSWORD_NAME", "REDACTED", "PrivacyFilter", "PrivacySettingsError",
    "app_names", "domain_matches", "strip_query", "url_host",
]
