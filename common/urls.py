"""What of a URL may be recorded, and its host: the rules in one place. Pure: no I/O, no clock.

Shared by the agent (what it records) and the raw sink (the ``url_domain`` column the "domains only" reports
read): both read a URL's host with :func:`url_host`, so a scheme-less address-bar URL
(``mail.example.com/inbox``) has the same host everywhere.

:func:`clean_url` is applied to every URL the agent records (a browser's address bar) and, through
:func:`clean_urls_in_text`, to every URL found inside a window title or tab title. What it guarantees:

- **userinfo is always removed** (``https://alice:pw@bank.example`` -> ``https://bank.example``), whatever
  the scheme (``ftp://``, ``ssh://``, ...), also when it is percent-encoded or contains further ``@``
  (the host is what follows the *last* ``@`` of the authority, as browsers read it), and also in the
  scheme-less form address bars show (``alice:pw@bank.example/acct``);
- ``data:``, ``javascript:``, ``vbscript:``, ``blob:``, ``mailto:``, ``tel:``, ``sms:`` and every other
  non-hierarchical scheme are reduced to the scheme alone (``data:``): their "path" is the content;
- ``file:`` URLs are reduced to the scheme and the file name (``file:///home/a/tax/2024.pdf`` ->
  ``file:2024.pdf``): directory names say too much;
- the query string, the fragment and ``;`` path parameters (``;jsessionid=...``) are dropped unless
  ``keep_query`` (then only userinfo goes and the opaque schemes are still reduced);
- hosts come out lower case, IPv6 literals keep their brackets (``https://[2001:db8::1]:8443/x``), an
  internationalised host stays as given (Unicode or ``xn--`` punycode; :func:`host_key` makes both
  spellings compare equal for domain lists);
- text that cannot be parsed as a URL at all (``http://[::1``) comes out as its scheme only, never as given.

Browsers show URLs in several shapes: with scheme (Firefox address bar, titles of pages without a
``<title>``), without ``https://`` (Chrome and Edge address bars), with a ``view-source:`` prefix; each is
handled, and the output keeps the input's shape (no scheme in, no scheme out).
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import SplitResult, urlsplit

#: Schemes whose URLs are a hierarchy ``scheme://host/path``; everything else without ``//`` is opaque.
HIERARCHICAL: Final = frozenset({
    "http", "https", "ftp", "ftps", "sftp", "ssh", "ws", "wss", "smb", "nfs", "webdav", "davs", "dav",
    "rtsp", "rtmp", "git", "svn", "ldap", "ldaps", "irc", "ircs", "gopher", "chrome", "edge", "brave",
    "moz-extension", "chrome-extension", "resource", "vnc", "rdp", "telnet", "sip", "file",
})
#: Schemes always reduced to the scheme alone: their "path" is the content (a page, a script, a message).
OPAQUE: Final = frozenset({
    "data", "javascript", "vbscript", "blob", "mailto", "tel", "sms", "callto", "magnet", "urn",
    "filesystem", "intent", "geo", "otpauth", "bitcoin", "ethereum", "cid", "mid",
})
#: Prefixes that wrap another URL and are kept in front of the cleaned inner URL.
WRAPPERS: Final = frozenset({"view-source"})
#: Schemes whose path is a name worth keeping (``about:blank``, ``chrome://settings`` is hierarchical).
NAMED: Final = frozenset({"about"})

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_PATH_PARAMS = re.compile(r";[^/]*")
#: Web schemes (WHATWG "special"): a backslash is a slash, as browsers read them.
_SPECIAL: Final = frozenset({"http", "https", "ftp", "ws", "wss", "file"})


def _netloc(parts: SplitResult) -> str:
    """``host[:port]`` of a split URL, without userinfo; IPv6 literals in brackets."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: dropped
        port = None
    return f"{host}:{port}" if port is not None else host


def _file_name(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit("\\", 1)[-1]


def clean_url(url: str, keep_query: bool = False) -> str:
    """``url`` as it may be recorded (see the module docstring for the rules)."""
    text = url.strip()
    if not text:
        return ""
    m = _SCHEME.match(text)
    scheme = m.group(1).lower() if m else ""
    rest = text[m.end():] if m else text
    if scheme in WRAPPERS:
        inner = clean_url(rest, keep_query)
        return f"{scheme}:{inner}" if inner else f"{scheme}:"
    if scheme in OPAQUE:
        return f"{scheme}:"
    if scheme == "file":
        path = rest.split("?", 1)[0].split("#", 1)[0].replace("\\", "/")
        if path.startswith("//"):  # file://host/path: the host is not part of the name
            path = "/" + path[2:].split("/", 1)[1] if "/" in path[2:] else ""
        name = _file_name(path)
        return f"file:{name}" if name else "file:"
    if scheme in NAMED:
        name = rest.split("?", 1)[0].split("#", 1)[0]
        return f"{scheme}:{name}"
    has_authority = rest.startswith("//") or (scheme in _SPECIAL and rest.startswith("\\\\"))
    if scheme and not has_authority and scheme not in HIERARCHICAL:
        # ``alice:pw@bank.example/x`` or ``localhost:8080/x`` (an address bar without scheme) read as a
        # host; anything else of the form ``word:rest`` is an opaque scheme we do not know: scheme only
        if "@" in rest.split("/", 1)[0] or re.match(r"\d+(?:[/?#]|$)", rest):
            scheme, rest, has_authority = "", "//" + text, True
        else:
            return f"{scheme}:"
    if scheme in _SPECIAL or not scheme:
        rest = rest.replace("\\", "/")
    if not scheme:
        rest = "//" + rest.lstrip("/") if not has_authority else rest
    elif not has_authority:  # ``https:host/path``: browsers read the host anyway
        rest = "//" + rest.lstrip("/")
    try:
        parts = urlsplit(("http:" if not scheme else f"{scheme}:") + rest)
        netloc = _netloc(parts)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return f"{scheme}:" if scheme else ""
    path = parts.path
    out = (f"{scheme}://" if scheme else "//" if text.startswith("//") else "") + netloc
    if keep_query:
        out += path
        if parts.query:
            out += "?" + parts.query
        if parts.fragment:
            out += "#" + parts.fragment
        return out
    return out + _PATH_PARAMS.sub("", path)


def url_host(url: str) -> str:
    """The host name of ``url`` (lower case, no port, no trailing dot, no brackets); "" when there is none
    (opaque schemes, ``file:``, unparsable text). A URL without a scheme is read as ``http://``."""
    text = url.strip()
    if not text:
        return ""
    m = _SCHEME.match(text)
    scheme = m.group(1).lower() if m else ""
    if scheme in OPAQUE or scheme in NAMED or scheme == "file":
        return ""
    if scheme in WRAPPERS:
        return url_host(text[m.end():] if m else "")
    cleaned = clean_url(text)
    if not cleaned or _SCHEME.fullmatch(cleaned):
        return ""
    try:
        if cleaned.startswith("//") or re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://", cleaned):
            host = urlsplit(cleaned).hostname or ""
        else:
            host = urlsplit("//" + cleaned).hostname or ""
    except ValueError:
        return ""
    return host.rstrip(".").lower()


def host_key(host: str) -> str:
    """One spelling of a host for comparisons: lower case ASCII (IDNA/punycode), no trailing dot.
    ``Bücher.Example`` and ``xn--bcher-kva.example`` give the same key."""
    host = host.strip().rstrip(".").lower()
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def domain_matches(host: str, domain: str) -> bool:
    """``host`` is ``domain`` or one of its subdomains (``mail.example.com`` matches ``example.com``);
    internationalised names match in either spelling."""
    domain = domain.strip().lstrip(".")
    if domain.startswith("*."):
        domain = domain[2:]
    h, d = host_key(host), host_key(domain)
    return bool(h) and bool(d) and (h == d or h.endswith("." + d))


#: A URL inside free text: ``scheme://...`` up to white space, or an opaque scheme's URL up to the
#: separator browsers put before their name (`` - ``, `` — ``, `` | ``) or the end of the text.
URL_IN_TEXT: Final = re.compile(
    r"(?<![\w+.\-])(?:view-source:)?"
    r"(?:(?:data:(?:[\w.+\-]+/[\w.+\-]+)?(?:;[\w.+\-]+(?:=[\w.+\-]+)?)*,"  # data:[type][;base64],
    r"|(?:javascript|vbscript|mailto|intent):(?=\S)"  # javascript:alert(1), not "JavaScript: The Good Parts"
    r"|blob:(?=[a-z][\w+.\-]*:)|(?:tel|sms):(?=[+\d])|magnet:\?)"
    r".*?(?=\s[-\u2013\u2014|]\s|$)"
    r"|file:\S+"
    r"|[A-Za-z][A-Za-z0-9+.\-]*://[^\s<>\"']+"
    # user:pw@host.example/... without scheme (lengths bounded: linear time on long titles)
    r"|[^\s:/@<>\"'()]{1,128}:[^\s/@<>\"']{0,256}@[^\s/@<>\"']+\.[^\s<>\"']+)",
    re.I,
)
_TRAILING = ".,;:!?)]}'\""


def clean_urls_in_text(text: str, keep_query: bool = False) -> str:
    """``text`` with every URL in it replaced by :func:`clean_url` of it (trailing punctuation that ends a
    sentence stays outside the URL)."""
    if "://" not in text and ":" not in text:
        return text

    def repl(m: re.Match[str]) -> str:
        found = m.group(0)
        tail = ""
        while found and found[-1] in _TRAILING and "://" in found:
            tail = found[-1] + tail
            found = found[:-1]
        return clean_url(found, keep_query) + tail

    return URL_IN_TEXT.sub(repl, text)


def hosts_in_text(text: str) -> list[str]:
    """Host names that appear in ``text``: hosts of URLs and bare names like ``bank.example`` or
    ``mail.bank.example`` (a dot-separated name whose last label is letters), lower case."""
    hosts = [url_host(m.group(0)) for m in URL_IN_TEXT.finditer(text)]
    hosts += [m.group(1).lower() for m in _BARE_HOST.finditer(text)]
    return [h for h in hosts if h]


_BARE_HOST = re.compile(r"(?<![\w\-.])((?:[^\W_](?:[\w\-]*[^\W_])?\.)+[^\W\d_]{2,})(?![\w\-])")


__all__ = [
    "HIERARCHICAL", "OPAQUE", "URL_IN_TEXT", "clean_url", "clean_urls_in_text", "domain_matches",
    "host_key", "hosts_in_text", "url_host",
]
