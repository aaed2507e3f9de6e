"""How legacy bodies are read (pure): charsets as Windows PowerShell 5.1 and other clients send them, the
lateness horizon, per-client token scopes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.horizon import MAX_FUTURE, accepted_since
from common.settings import SettingsError
from gateway.legacy import LegacyReport, ReportRejected, to_event
from gateway.legacy_body import MAX_DEPTH, BodyRejected, body_text, charset_of, parse_report
from gateway.legacy_tokens import TokenScopes, parse_token_file
from proto.keys import event_user_key

JOSE_JSON = '{"user":"José","state":"working","ts":"2026-11-27T08:00:00Z"}'
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def key_of(raw: bytes, content_type: str | None) -> str:
    report = parse_report(raw, content_type)
    event = to_event(report, now=NOW, default_domain="SHOP", zone=ZoneInfo("UTC"), host="pc")
    return event_user_key(event)


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (JOSE_JSON.encode("latin-1"), "application/json"),  # PowerShell 5.1 -ContentType application/json
        (JOSE_JSON.encode("latin-1"), "application/x-www-form-urlencoded"),  # its default for a string
        (JOSE_JSON.encode("latin-1"), None),
        (JOSE_JSON.encode("latin-1"), "application/json; charset=iso-8859-1"),
        (JOSE_JSON.encode("latin-1"), 'application/json; charset="ISO-8859-1"'),
        (JOSE_JSON.encode("cp1252"), "application/json; charset=windows-1252"),
        (JOSE_JSON.encode("utf-8"), "application/json"),  # PowerShell 7, curl, Python
        (JOSE_JSON.encode("utf-8"), "application/json; charset=utf-8"),
        (b"\xef\xbb\xbf" + JOSE_JSON.encode("utf-8"), "application/json"),  # a BOM
        (JOSE_JSON.encode("utf-16"), "application/json; charset=utf-16"),
        (JOSE_JSON.replace("é", "e\u0301").encode("utf-8"), "application/json"),  # decomposed é
        (JOSE_JSON.replace("é", "\\u00e9").encode("ascii"), "application/json"),  # escaped
    ],
)
def test_the_same_name_in_any_encoding_is_the_same_user_key(raw: bytes, content_type: str | None) -> None:
    assert key_of(raw, content_type) == "shop\\josé"


@pytest.mark.parametrize(
    "form",
    [
        b"user=Jos%C3%A9&state=working&ts=2026-11-27T08%3A00%3A00Z",  # -Body @{...}: UTF-8 percent-encoded
        b"user=Jos%E9&state=working&junk=x&ts=2026-11-27T08:00:00Z",  # Latin-1 percent-encoded
        b"ts=2026-11-27T08:00:00Z&user=JOS%C3%89&state=working",
    ],
)
def test_form_bodies_as_powershell_sends_a_hashtable(form: bytes) -> None:
    assert key_of(form, "application/x-www-form-urlencoded") == "shop\\josé"


def test_windows_1252_specials_without_charset() -> None:
    # "€" and "Š" are 0x80 and 0x8A in Windows-1252 (ISO-8859-1 has controls there)
    text = '{"user":"€Š","state":"working"}'
    assert parse_report(text.encode("cp1252"), None).user == "€Š"
    assert parse_report(text.encode("cp1252"), "text/plain; charset=latin1").user == "€Š"
    # the five bytes Windows-1252 leaves undefined decode (to C1 controls), and the user is then refused
    report = parse_report(b'{"user":"a\x81b","state":"working"}', None)
    with pytest.raises(ReportRejected) as exc:
        to_event(report, now=NOW, default_domain="SHOP", zone=ZoneInfo("UTC"), host="pc")
    assert exc.value.reason == "invalid_user"


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "reason"),
    [
        (JOSE_JSON.encode("latin-1"), "application/json; charset=utf-8", 400, "invalid_encoding"),
        (JOSE_JSON.encode("latin-1"), "application/json; charset=x-klingon", 400, "invalid_encoding"),
        (b'{"user":"a\x00b","state":"working"}', None, 400, "invalid_encoding"),
        (b'{"user":"ab","state":"working"}\x00', "application/json", 400, "invalid_encoding"),
        (b"[" * 100_000 + b"]" * 100_000, None, 400, "malformed_json"),
        (b'{"user":"a","state":"working","x":' + b"[" * 40 + b"]" * 40 + b"}", None, 400, "malformed_json"),
        (b'{"user":"a","state":"working","x":"' + b"[" * 500 + b'"}', None, None, None),  # in a string: ok
        (b"", "application/json", 400, "malformed_json"),
        (b"  \r\n", "application/json", 400, "malformed_json"),
        (b'{"user": "jdoe", "state": "work', None, 400, "malformed_json"),
        (b"[]", None, 422, "invalid_body"),
        (b'"working"', None, 422, "invalid_body"),
        (b'{"user": "jdoe", "state": "sleeping"}', None, 422, "invalid_body"),
        (b'{"user": 7, "state": "working"}', None, 422, "invalid_body"),
        (b"\xff\xfe\x00\x00", None, 400, "invalid_encoding"),  # cp1252 of these contains a NUL
    ],
)
def test_unreadable_bodies_get_a_clear_reason(
    raw: bytes, content_type: str | None, status: int | None, reason: str | None
) -> None:
    if status is None:
        parse_report(raw, content_type)
        return
    with pytest.raises(BodyRejected) as exc:
        parse_report(raw, content_type)
    assert (exc.value.status, exc.value.reason) == (status, reason)
    assert str(exc.value)


def test_unknown_fields_are_ignored_and_not_kept() -> None:
    report = parse_report(b'{"user":"a","state":"stopped","junk":{"deep":[1,2,{"x":"y"}]},"ts":null}', None)
    assert report == LegacyReport(user="a", state="stopped", ts=None)
    assert MAX_DEPTH >= 4


def test_charset_parameter() -> None:
    assert charset_of("application/json; Charset=UTF-8") == "utf-8"
    assert charset_of('text/plain;charset="iso-8859-1"; format=flowed') == "iso-8859-1"
    assert charset_of("application/json") is None and charset_of(None) is None
    assert body_text("Ü".encode("latin-1"), "text/plain; charset=us-ascii") == "Ü"  # a WHATWG label


def test_accepted_since_is_the_tighter_of_stream_and_raw_sink() -> None:
    # the stream keeps `retention` back from a user's latest event, which may be MAX_FUTURE ahead of now
    assert accepted_since(NOW, 3 * 86400, 400) == NOW + MAX_FUTURE - timedelta(days=3)
    assert accepted_since(NOW, 3 * 86400, 0) == NOW - timedelta(days=2)
    # the raw sink drops whole UTC days older than raw_retention_days before today
    assert accepted_since(NOW, 30 * 86400, 10) == datetime(2026, 11, 17, tzinfo=UTC)


def test_to_event_refuses_ts_the_pipeline_would_drop() -> None:
    oldest = accepted_since(NOW, 3 * 86400, 400)

    def event(ts: str) -> object:
        return to_event(
            LegacyReport(user="jdoe", state="working", ts=ts),
            now=NOW,
            default_domain="SHOP",
            zone=ZoneInfo("UTC"),
            host="pc",
            oldest=oldest,
        )

    event(oldest.isoformat())
    for ts, reason in [
        ((oldest - timedelta(milliseconds=1)).isoformat(), "ts_too_old"),
        ("2026-01-01T00:00:00Z", "ts_too_old"),
        ("1999-12-31T23:00:00Z", "ts_out_of_range"),
        ((NOW + MAX_FUTURE + timedelta(seconds=1)).isoformat(), "ts_out_of_range"),
    ]:
        with pytest.raises(ReportRejected) as exc:
            event(ts)
        assert exc.value.reason == reason, ts


TOKENS = """
# token                          may report for
shop-token-0123456789abcdef      SHOP\\Till1, shop\\till2
corp-token-0123456789abcdef      corp\\*   # every corp login
admin-token-0123456789abcdef     *
"""


def test_token_scopes() -> None:
    scopes = parse_token_file(TOKENS)
    assert len(scopes) == 3
    shop = scopes.scopes_of("shop-token-0123456789abcdef")
    corp = scopes.scopes_of("corp-token-0123456789abcdef")
    admin = scopes.scopes_of("admin-token-0123456789abcdef")
    assert shop is not None and corp is not None and admin is not None
    assert scopes.scopes_of("shop-token-0123456789abcdeX") is None and scopes.scopes_of("") is None
    assert TokenScopes.allows(shop, "shop\\till1") and not TokenScopes.allows(shop, "shop\\till3")
    assert TokenScopes.allows(corp, "corp\\alice") and not TokenScopes.allows(corp, "hr\\boss")
    assert not TokenScopes.allows(corp, "corporate\\alice") and not TokenScopes.allows(corp, "corp")
    assert TokenScopes.allows(admin, "hr\\boss")


@pytest.mark.parametrize(
    "text",
    [
        "short hr\\boss",
        "long-enough-token-0001",
        "long-enough-token-0001 hr",
        "long-enough-token-0001 hr\\b*",
        "long-enough-token-0001 *\\boss",
        "long-enough-token-0001 a\\b\nlong-enough-token-0001 c\\d",
    ],
)
def test_bad_token_files_name_the_line_not_the_token(text: str) -> None:
    with pytest.raises(SettingsError) as exc:
        parse_token_file(text)
    assert "line" in str(exc.value) and "long-enough-token" not in str(exc.value)


def test_access_log_lines_lose_their_query_string() -> None:
    import logging

    from gateway.cli import DropQueryStrings

    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("10.0.0.5:5123", "POST", "/api/report?token=secret-0123456789", "1.1", 200), None,
    )
    assert DropQueryStrings().filter(record)
    assert record.getMessage() == '10.0.0.5:5123 - "POST /api/report HTTP/1.1" 200'


def test_bad_legacy_settings_stop_the_start_with_a_clear_message(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from pathlib import Path

    from gateway.cli import main

    bad_file = Path(str(tmp_path)) / "tokens"
    bad_file.write_text("secret-token-abcdefgh01 hr\\b*\n", encoding="utf-8")
    for argv, what in [
        (["--legacy-tokens-file", str(bad_file)], "legacy_tokens_file line 1"),
        (["--legacy-tokens-file", str(bad_file) + ".missing"], "cannot read"),
        (["--legacy-max-body-bytes", "10"], "legacy_max_body_bytes"),
        (["--retention", "0"], "retention"),
    ]:
        assert main([*argv, "--pg-dsn", ""]) == 2, argv
        err = capsys.readouterr().err
        assert what in err and "secret-token" not in err, (argv, err)


def test_what_convertto_json_of_powershell_51_writes() -> None:
    """PowerShell 5.1's ConvertTo-Json: indented with CRLF and two spaces after the colon, non-ASCII as is,
    a [DateTime] as "\\/Date(ms)\\/", (Get-Date -Format o) with seven fractional digits."""
    ms = int(NOW.timestamp() * 1000) - 3_600_000
    body = (
        '{\r\n    "user":  "José",\r\n    "state":  "working",\r\n'
        '    "ts":  "\\/Date(' + str(ms) + ')\\/"\r\n}'
    )
    report = parse_report(body.encode("latin-1"), "application/json")
    event = to_event(report, now=NOW, default_domain="SHOP", zone=ZoneInfo("Europe/Berlin"), host="pc")
    assert event.ts == NOW - timedelta(hours=1) and event_user_key(event) == "shop\\josé"
    report = parse_report(b'{"user":"a","state":"stopped","ts":"2026-11-27T12:00:00.1234567+01:00"}', None)
    event = to_event(report, now=NOW, default_domain="SHOP", zone=ZoneInfo("UTC"), host="pc")
    assert event.ts == datetime(2026, 11, 27, 11, 0, 0, 123000, tzinfo=UTC)
    for bad in ("/Date(99999999999999999999)/", "/Date()/", "/Date(12)"):
        with pytest.raises(ReportRejected):
            to_event(
                LegacyReport(user="a", state="working", ts=bad),
                now=NOW, default_domain="SHOP", zone=ZoneInfo("UTC"), host="pc",
            )


CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=iso-8859-1",
    "application/json; charset=utf-16",
    "application/json; charset=x-nope",
    "application/x-www-form-urlencoded",
    "text/plain; charset=",
    'application/json; charset="',
]
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


def _read_all_the_way(raw: bytes, content_type: str | None) -> None:
    try:
        report = parse_report(raw, content_type)
    except BodyRejected as exc:
        assert exc.status in (400, 422) and exc.reason and str(exc)
        return
    try:
        to_event(report, now=NOW, default_domain="SHOP", zone=ZoneInfo("Europe/Berlin"), host="pc")
    except ReportRejected as exc:
        assert exc.reason


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300), content_type=st.sampled_from(CONTENT_TYPES))
def test_any_bytes_are_a_report_or_a_clear_refusal(raw: bytes, content_type: str | None) -> None:
    _read_all_the_way(raw, content_type)


@settings(max_examples=300, deadline=None)
@given(
    value=st.dictionaries(
        st.sampled_from(["user", "state", "ts", "junk"]),
        JSONISH | st.sampled_from(["working", "stopped", "2026-11-27T10:00:00Z", "/Date(1)/", "a\\b"]),
    )
    | JSONISH,
    encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]),
    content_type=st.sampled_from(CONTENT_TYPES),
)
def test_any_json_is_a_report_or_a_clear_refusal(
    value: object, encoding: str, content_type: str | None
) -> None:
    text = json.dumps(value, ensure_ascii=False)
    _read_all_the_way(text.encode(encoding, errors="replace"), content_type)
