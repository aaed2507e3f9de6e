"""The body of a legacy ``POST /api/report`` as real clients send it -> a :class:`LegacyReport`. Pure.

Windows PowerShell 5.1 (``Invoke-RestMethod`` / ``Invoke-WebRequest`` with a string ``-Body``) encodes the
body as ISO-8859-1 unless the ``-ContentType`` names a charset, so a user name "José" arrives as the byte
``E9``; PowerShell 7 and most other clients send UTF-8. The rules (``docs/gateway.md``):

- a ``charset`` parameter of ``Content-Type`` is honoured; the labels that mean Latin-1 (``iso-8859-1``,
  ``latin1``, ``us-ascii``, ``windows-1252``...) are read as Windows-1252, as the WHATWG Encoding Standard
  and browsers do (bytes ``80``-``9F`` are then printable characters where Windows-1252 defines them);
- without a charset: a leading UTF-8 byte order mark is dropped; bytes that are valid UTF-8 are UTF-8,
  anything else is Windows-1252 (so the same name in either encoding gives the same user key);
- a declared charset the bytes do not decode in, an unknown charset, NUL characters and JSON nested deeper
  than :data:`MAX_DEPTH` are refused with a clear reason (never a 5xx);
- whatever the ``Content-Type`` says (``application/json``, ``text/plain``, PowerShell's default
  ``application/x-www-form-urlencoded`` for a string body), a body that is JSON is read as JSON; a
  ``application/x-www-form-urlencoded`` body that is not (PowerShell's ``-Body @{user=...; state=...}``)
  is read as form fields, each percent-decoded value as UTF-8 or else Windows-1252;
- unknown fields are ignored: only ``user``, ``state`` and ``ts`` are ever used.
"""

from __future__ import annotations

import codecs
import re
from typing import Final
from urllib.parse import parse_qsl

import msgspec

from gateway.legacy import LegacyReport

#: Deepest nesting of arrays/objects accepted (the report itself is one flat object).
MAX_DEPTH: Final = 32
_WIN1252_LABELS: Final = frozenset(
    {
        "iso-8859-1", "iso8859-1", "iso_8859-1", "iso-ir-100", "latin1", "latin-1", "l1", "csisolatin1",
        "ibm819", "cp819", "us-ascii", "ascii", "ansi_x3.4-1968", "windows-1252", "cp1252", "x-cp1252",
    }
)
_UTF8_LABELS: Final = frozenset({"utf-8", "utf8", "unicode-1-1-utf-8", "x-unicode20utf8"})
_CHARSET = re.compile(r';\s*charset\s*=\s*"?([^";\s]*)"?', re.IGNORECASE)
_decoder: Final = msgspec.json.Decoder(LegacyReport)


class BodyRejected(ValueError):
    """A body that cannot be read as a report: HTTP ``status`` and ``reason`` (a rejection label)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def _c1_for_undefined(exc: UnicodeError) -> tuple[str, int]:
    # The five bytes Windows-1252 leaves undefined decode to the C1 control of the same value (WHATWG).
    assert isinstance(exc, UnicodeDecodeError)
    return exc.object[exc.start : exc.end].decode("latin-1"), exc.end


codecs.register_error("desktrace-c1", _c1_for_undefined)


def decode_windows_1252(raw: bytes) -> str:
    """``raw`` as Windows-1252 the WHATWG way: never fails."""
    return raw.decode("cp1252", errors="desktrace-c1")


def charset_of(content_type: str | None) -> str | None:
    """The lower-cased ``charset`` parameter of a ``Content-Type`` value, or None."""
    if not content_type:
        return None
    m = _CHARSET.search(content_type)
    return m.group(1).lower() if m and m.group(1) else None


def body_text(raw: bytes, content_type: str | None) -> str:
    """The text of ``raw`` under the rules above; raises :class:`BodyRejected`."""
    charset = charset_of(content_type)
    if charset is None or charset in _UTF8_LABELS:
        if raw.startswith(codecs.BOM_UTF8):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            if charset is not None:
                raise BodyRejected(
                    400, "invalid_encoding", "the body is not valid UTF-8 although its Content-Type says so"
                ) from None
            text = decode_windows_1252(raw)
    elif charset in _WIN1252_LABELS:
        text = decode_windows_1252(raw)
    else:
        try:
            codec = codecs.lookup(charset)
        except LookupError:
            raise BodyRejected(
                400, "invalid_encoding", "unknown charset in Content-Type: send UTF-8 or ISO-8859-1"
            ) from None
        try:
            text = raw.decode(codec.name)
        except UnicodeDecodeError:
            raise BodyRejected(
                400, "invalid_encoding", "the body does not decode in the charset its Content-Type names"
            ) from None
    if "\x00" in text:
        raise BodyRejected(400, "invalid_encoding", "the body contains NUL characters")
    return text


def _too_deep(text: str) -> bool:
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _form_report(text: str) -> LegacyReport:
    fields: dict[str, str] = {}
    for name, value in parse_qsl(text, keep_blank_values=True, encoding="latin-1"):
        if name in ("user", "state", "ts"):
            octets = value.encode("latin-1")
            try:
                fields[name] = octets.decode("utf-8")
            except UnicodeDecodeError:
                fields[name] = decode_windows_1252(octets)
    if "\x00" in "".join(fields.values()):
        raise BodyRejected(400, "invalid_encoding", "the body contains NUL characters")
    try:
        return msgspec.convert(fields, LegacyReport)
    except msgspec.ValidationError as exc:
        raise BodyRejected(
            422, "invalid_body", f"the form must have user, state (working|stopped) and optionally ts: {exc}"
        ) from None


def parse_report(raw: bytes, content_type: str | None) -> LegacyReport:
    """The report in ``raw``; raises :class:`BodyRejected` (400 unreadable, 422 not a report)."""
    if not raw.strip():
        raise BodyRejected(400, "malformed_json", "the body is empty: send a JSON object")
    text = body_text(raw, content_type)
    is_form = (content_type or "").split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded"
    if is_form and not text.lstrip().startswith(("{", "[", '"')):
        return _form_report(text)
    if _too_deep(text):
        raise BodyRejected(400, "malformed_json", f"the body nests deeper than {MAX_DEPTH} levels")
    try:
        return _decoder.decode(text)
    except msgspec.ValidationError as exc:
        raise BodyRejected(
            422,
            "invalid_body",
            'the body must be {"user": str, "state": "working"|"stopped", "ts": ISO 8601 (optional)}: '
            f"{exc}",
        ) from None
    except msgspec.DecodeError as exc:
        raise BodyRejected(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
