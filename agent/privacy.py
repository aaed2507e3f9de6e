"""What the agent may record about a window: app and domain include/exclude lists, URL cleaning
(:mod:`common.urls`), default and configured redaction, and extended-mode field values (never a
password). Pure: no I/O, no clock.

The recorder applies :class:`PrivacyFilter` to every :class:`~agent.observations.WindowSnapshot` before
anything else, so nothing it drops or redacts ever reaches an event, the spool or Kafka.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from agent.observations import WindowSnapshot
from common.urls import clean_url, clean_urls_in_text, domain_matches, hosts_in_text, url_host
from proto.events import FieldValue, UiNode

#: What a redacted match is replaced with.
REDACTED = "[redacted]"
#: Longest text (title, tab, URL, path, name, field value) kept, in characters; longer ones are cut before
#: cleaning (with an ellipsis), so a pathological window title can never stall the agent.
MAX_TEXT_CHARS = 4096

#: Field names that mark a password field even when the platform does not flag it (defence in depth), in
#: the major languages: English, German, French, Spanish, Portuguese, Italian, Dutch, Polish, Czech, Slovak,
#: Hungarian, Romanian, Turkish, Swedish, Danish/Norwegian, Finnish, Greek, Russian/Ukrainian/Bulgarian,
#: Arabic, Hebrew, Hindi, Chinese, Japanese, Korean, Vietnamese, Indonesian. Latin-script words match
#: whole words (``PIN`` but not ``Pinned``), the others anywhere in the name.
PASSWORD_NAME = re.compile(
    r"pass(?:word|wort|wd|code|phrase)|\b(?:pass|pwd|pin|pins|mdp|otp|tan|cvv|cvc|cvv2)\b"
    r"|\b(?:kennwort|geheimzahl|mot\s+de\s+passe|code\s+secret|contrase(?:\u00f1|n)a|clave|senha"
    r"|palavra[\s-]passe|parola\s+(?:d'ordine|chiave)|wachtwoord|has(?:\u0142|l)o|heslo|jelsz(?:\u00f3|o)"
    r"|parol(?:\u0103|a)|\u015fifre|sifre|l\u00f6senord|losenord|adgangskode|passord|salasana"
    r"|m\u1eadt\s+kh\u1ea9u|kata\s+sandi)\b"
    r"|\u043f\u0430\u0440\u043e\u043b"  # пароль (Russian, Ukrainian, Bulgarian), any ending
    r"|\u03ba\u03c9\u03b4\u03b9\u03ba|\u03c3\u03c5\u03bd\u03b8\u03b7\u03bc\u03b1"  # κωδικ(ός), συνθημα
    r"|\u0643\u0644\u0645\u0629\s*(?:\u0627\u0644)?\u0645\u0631\u0648\u0631"  # كلمة المرور
    r"|\u05e1\u05d9\u05e1\u05de"  # סיסמה (Hebrew)
    r"|\u092a\u093e\u0938\u0935\u0930\u094d\u0921"  # पासवर्ड (Hindi)
    r"|\u5bc6\u7801|\u5bc6\u78bc|\u53e3\u4ee4"  # 密码, 密碼, 口令 (Chinese)
    r"|\u30d1\u30b9\u30ef\u30fc\u30c9|\u6697\u8a3c\u756a\u53f7"  # パスワード, 暗証番号 (Japanese)
    r"|\ube44\ubc00\ubc88\ud638|\uc554\ud638",  # 비밀번호, 암호 (Korean)
    re.I,
)

#: The redaction rules applied by default to every recorded text (title, tab, URL, file path, sheet,
#: hierarchy names, extended-mode fields), by name; ``privacy_default_redact_off`` turns single ones off.
#: Each is a regular expression whose matches become ``[redacted]``.
DEFAULT_RULES: dict[str, str] = {
    # IBANs, spaced or not: two letters, two check digits, 11-30 alphanumerics
    "iban": r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b",
    # e-mail addresses (also internationalised: Unicode letters in local part and domain)
    # (the look-behind starts a match only where a local part starts: linear time on long words)
    "email": r"(?<![\w.+\-%!#$&'*/=^`{|}~])[\w.+\-%!#$&'*/=^`{|}~]{1,128}@"
    r"(?:[^\W_](?:[\w\-]{0,62}[^\W_])?\.)+[^\W\d_]{2,63}(?![\w\-])",
    # the values of query parameters anywhere in a text: ``?token=SECRET123`` -> ``?[redacted]``
    "url_query": r"(?<=[?&])[^\s=&?#/]+=[^\s&#]*(?:&[^\s=&?#/]+=[^\s&#]*)*",
    # long digit runs: 9+ digits in a row, or card-style groups (4-4-4[-4...], Amex 4-6-5), with spaces or
    # dashes; dates (2024-03-04), times, versions and short numbers ("Invoice 42") are left alone
    "long_digits": r"(?<![\d.,])(?:\d{9,}|\d{4}(?:[ -]\d{4}){2,}(?:[ -]\d{1,4})?"
    r"|\d{4}[ -]\d{6}[ -]\d{4,5})(?![\d])",
}

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


def strip_query(url: str) -> str:
    """``url`` as recorded by default: no query, fragment or userinfo (:func:`common.urls.clean_url`)."""
    return clean_url(url)


@dataclass(frozen=True)
class PrivacyFilter:
    """Decides what of a window snapshot may be recorded.

    Guarantees of :meth:`apply`:

    - it returns None (nothing is recorded about the window) when the app is in ``exclude_apps``, or an
      ``include_apps`` list is set and the app is not in it, or the URL's host is (a subdomain of) a domain
      in ``exclude_domains``, or an ``include_domains`` list is set and the window shows a URL whose host is
      not in it; apps match the program name or the executable's name/path, case-insensitively;
    - a window without a URL (Linux, a browser whose address bar could not be read) is excluded too when a
      host name in its title or tab title (``Online banking - bank.example``, a URL shown as the title) is
      (a subdomain of) an ``exclude_domains`` entry;
    - the URL and every URL inside the title, tab, file path, sheet and hierarchy names go through
      :func:`common.urls.clean_url`: never userinfo, opaque schemes (``data:``, ``javascript:``, ...)
      reduced to the scheme, ``file:`` to its file name, no query string and no fragment unless
      ``keep_query``;
    - the default rules (:data:`DEFAULT_RULES`: e-mail addresses, query parameters, long digit runs, IBANs)
      less those named in ``default_rules_off``, then every ``redact`` pattern, are replaced by
      ``[redacted]`` in the title, tab, URL, file path, sheet, hierarchy names and (extended mode) field
      names and values; with ``keep_query`` the ``url_query`` rule leaves the URL field alone;
    - ``fields`` is None unless ``extended_mode``; in extended mode a field marked ``password`` never keeps
      a value (forced to None, ``edited`` kept), whatever the source delivered; a field whose name looks
      like a password in one of the major languages (:data:`PASSWORD_NAME`: ``Password``, ``Kennwort``,
      ``Пароль``, ``Mot de passe``, ``密码``, ...) is treated as a password field;
    - every text is cut to :data:`MAX_TEXT_CHARS` before it is cleaned (at a white space when one is in
      the last 512 characters, so the word at the cut is dropped whole);
    - the input snapshot is never modified: a changed copy is returned.
    """

    include_apps: frozenset[str] = frozenset()
    exclude_apps: frozenset[str] = frozenset()
    include_domains: tuple[str, ...] = ()
    exclude_domains: tuple[str, ...] = ()
    redact: tuple[re.Pattern[str], ...] = ()
    keep_query: bool = False
    extended_mode: bool = False
    default_rules: tuple[tuple[str, re.Pattern[str]], ...] = ()

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
        default_rules_off: Iterable[str] = (),
    ) -> PrivacyFilter:
        """Build a filter from plain lists; a bad regular expression or an unknown default rule name raises
        :class:`PrivacySettingsError`."""
        patterns = []
        for p in redact:
            try:
                patterns.append(re.compile(p))
            except re.error as exc:
                raise PrivacySettingsError(
                    f"privacy_redact pattern {p!r} is not a regular expression: {exc}"
                ) from None
        off = {r.strip().lower() for r in default_rules_off if r.strip()}
        unknown = off - set(DEFAULT_RULES)
        if unknown:
            raise PrivacySettingsError(
                f"privacy_default_redact_off names unknown rules {sorted(unknown)}; "
                f"the default rules are {', '.join(DEFAULT_RULES)}"
            )
        return cls(
            include_apps=frozenset(a.lower() for a in include_apps),
            exclude_apps=frozenset(a.lower() for a in exclude_apps),
            include_domains=tuple(d.lower() for d in include_domains),
            exclude_domains=tuple(d.lower() for d in exclude_domains),
            redact=tuple(patterns),
            keep_query=keep_query,
            extended_mode=extended_mode,
            default_rules=tuple((n, _DEFAULT_COMPILED[n]) for n in DEFAULT_RULES if n not in off),
        )

    @classmethod
    def from_settings(cls, settings: Any) -> PrivacyFilter:
        """Read ``privacy_include_apps``, ``privacy_exclude_apps``, ``privacy_include_domains``,
        ``privacy_exclude_domains``, ``privacy_redact``, ``privacy_default_redact_off``,
        ``privacy_keep_query`` and ``extended_mode`` from an object's attributes or a mapping's keys (missing
        ones take their defaults)."""

        def get(name: str) -> Any:
            if isinstance(settings, Mapping):
                return settings.get(name)
            return getattr(settings, name, None)

        return cls.create(
            include_apps=_as_list(get("privacy_include_apps")),
            exclude_apps=_as_list(get("privacy_exclude_apps")),
            include_domains=_as_list(get("privacy_include_domains")),
            exclude_domains=_as_list(get("privacy_exclude_domains")),
            redact=_as_patterns(get("privacy_redact")),
            keep_query=_as_bool(get("privacy_keep_query")),
            extended_mode=_as_bool(get("extended_mode")),
            default_rules_off=_as_list(get("privacy_default_redact_off")),
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
        if host:
            if any(domain_matches(host, d) for d in self.exclude_domains):
                return False
        elif self.exclude_domains:
            # no URL known (Linux; an unreadable address bar): the site as the title names it
            for h in hosts_in_text(_cut(snapshot.title)) + hosts_in_text(_cut(snapshot.tab)):
                if any(domain_matches(h, d) for d in self.exclude_domains):
                    return False
        if self.include_domains and host:
            return any(domain_matches(host, d) for d in self.include_domains)
        return True

    def apply(self, snapshot: WindowSnapshot) -> WindowSnapshot | None:
        """The snapshot as it may be recorded, or None when the window must not be recorded at all."""
        if not self.allows(snapshot):
            return None
        url = clean_url(_cut(snapshot.url), self.keep_query)
        fields: list[FieldValue] | None = None
        if self.extended_mode and snapshot.fields is not None:
            fields = [self._field(f) for f in snapshot.fields]
        return msgspec.structs.replace(
            snapshot,
            title=self.clean_text(snapshot.title),
            tab=self.clean_text(snapshot.tab),
            url=self._redact(url, is_url=True),
            file_path=self.clean_text(snapshot.file_path),
            sheet=self.clean_text(snapshot.sheet),
            hierarchy=[
                UiNode(name=self.clean_text(n.name), control_type=n.control_type) for n in snapshot.hierarchy
            ],
            fields=fields,
        )

    def clean_text(self, text: str) -> str:
        """A free text as it may be recorded: URLs in it cleaned, then the default rules and the
        ``redact`` patterns applied."""
        if not text:
            return text
        return self._redact(clean_urls_in_text(_cut(text), self.keep_query))

    def _field(self, f: FieldValue) -> FieldValue:
        if f.password or PASSWORD_NAME.search(f.name):
            return FieldValue(name=self.clean_text(f.name), control_type=f.control_type, value=None,
                              edited=f.edited, password=True)
        value = self.clean_text(f.value) if f.value is not None else None
        return FieldValue(name=self.clean_text(f.name), control_type=f.control_type, value=value,
                          edited=f.edited, password=False)

    def _redact(self, text: str, is_url: bool = False) -> str:
        if not text:
            return text
        for name, pattern in self.default_rules:
            if is_url and name == "url_query" and self.keep_query:
                continue
            text = pattern.sub(REDACTED, text)
        for pattern in self.redact:
            text = pattern.sub(REDACTED, text)
        return text


def _cut(text: str) -> str:
    """``text`` cut to :data:`MAX_TEXT_CHARS` with an ellipsis, at a white space when one is near, so that a
    word cut in two (an e-mail address without its domain) is dropped whole."""
    if len(text) <= MAX_TEXT_CHARS:
        return text
    head = text[: MAX_TEXT_CHARS - 1]
    space = max(head.rfind(" "), head.rfind("\t"), head.rfind("\n"))
    return (head[: space + 1] if space >= MAX_TEXT_CHARS - 512 else head) + "\u2026"


_DEFAULT_COMPILED: dict[str, re.Pattern[str]] = {name: re.compile(p) for name, p in DEFAULT_RULES.items()}

__all__ = [
    "DEFAULT_RULES", "MAX_TEXT_CHARS", "PASSWORD_NAME", "REDACTED", "PrivacyFilter", "PrivacySettingsError",
    "app_names", "domain_matches", "strip_query", "url_host",
]
