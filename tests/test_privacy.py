"""The privacy filter: what users rely on is that excluded windows, password values, query strings and
redacted text never reach an event, the spool or Kafka."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.identity import Identity
from agent.observations import InputObservation, WindowSnapshot
from agent.privacy import PrivacyFilter, PrivacySettingsError, strip_query, url_host
from agent.recorder import Recorder
from agent.settings import load_agent_settings
from proto.codec import encode_event, event_to_json
from proto.events import FieldValue, UiNode

T0 = datetime(2024, 5, 6, 9, 0, 0, tzinfo=UTC)
SECRET = "hunter2-Sup3rSecret"


def snap(**kw: object) -> WindowSnapshot:
    base: dict[str, object] = {
        "ts": T0, "window_id": "42", "app": "chrome.exe", "exe_path": r"C:\Program Files\Google\chrome.exe",
        "title": "Inbox - Mail", "tab": "Inbox", "url": "https://mail.example.com/inbox?token=abc#msg-1",
    }
    base.update(kw)
    return WindowSnapshot(**base)  # type: ignore[arg-type]


def login_form() -> list[FieldValue]:
    # What a careless source might deliver: the password field *with* its value.
    return [
        FieldValue(name="User name", control_type="Edit", value="alice", edited=True),
        FieldValue(name="Secret", control_type="Edit", value=SECRET, edited=True, password=True),
        FieldValue(name="New password", control_type="Edit", value=SECRET, edited=True),  # not flagged
    ]


# ---- password fields --------------------------------------------------------------------------------


def test_password_value_never_survives_even_in_extended_mode() -> None:
    f = PrivacyFilter.create(extended_mode=True)
    out = f.apply(snap(fields=login_form()))
    assert out is not None and out.fields is not None
    by_name = {x.name: x for x in out.fields}
    assert by_name["User name"].value == "alice"
    assert by_name["Secret"] == FieldValue(name="Secret", control_type="Edit", value=None, edited=True,
                                           password=True)
    # a field named like a password is treated as one even when the platform did not flag it
    assert by_name["New password"].value is None and by_name["New password"].password
    assert by_name["New password"].edited


def test_password_value_never_reaches_an_encoded_event() -> None:
    ident = Identity(agent_id="a-1", user="alice", domain="corp", host="pc1")
    privacy = PrivacyFilter.create(extended_mode=True)
    rec = Recorder(ident, privacy=privacy, extended_mode=True)
    events = rec.start(T0)
    events += rec.observe(snap(fields=login_form()))
    events += rec.observe(InputObservation(ts=T0 + timedelta(seconds=1), kind="key", injected=False))
    assert [e.type for e in events] == ["AgentStart", "WindowOpen", "HardwareKeyboardEvent"]
    for e in events:
        assert SECRET.encode() not in encode_event(e)
        assert SECRET.encode() not in event_to_json(e)
    assert b"alice" in encode_event(events[1])  # the ordinary field is kept in extended mode


def test_fields_dropped_outside_extended_mode() -> None:
    out = PrivacyFilter.create().apply(snap(fields=login_form()))
    assert out is not None and out.fields is None


def test_input_snapshot_is_not_modified() -> None:
    original = snap(fields=login_form())
    PrivacyFilter.create(extended_mode=True, redact=["Inbox"]).apply(original)
    assert original.fields is not None and original.fields[1].value == SECRET
    assert original.title == "Inbox - Mail"


# ---- include / exclude ----------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["chrome.exe", "CHROME", "chrome", r"c:\program files\google\chrome.exe"])
def test_excluded_app_gives_none(entry: str) -> None:
    assert PrivacyFilter.create(exclude_apps=[entry]).apply(snap()) is None


def test_include_apps_keeps_only_listed_apps() -> None:
    f = PrivacyFilter.create(include_apps=["excel"])
    assert f.apply(snap()) is None
    assert f.apply(snap(app="EXCEL.EXE", exe_path="", url="")) is not None


@pytest.mark.parametrize(
    ("url", "excluded"),
    [
        ("https://mail.example.com/inbox", True),
        ("https://example.com", True),
        ("mail.example.com/inbox", True),  # address bars often show no scheme
        ("https://EXAMPLE.COM.:8443/x", True),
        ("https://notexample.com/", False),
        ("https://example.com.evil.org/", False),
        ("", False),
    ],
)
def test_excluded_domain_and_subdomains(url: str, excluded: bool) -> None:
    f = PrivacyFilter.create(exclude_domains=["example.com"])
    assert (f.apply(snap(url=url)) is None) is excluded


def test_include_domains() -> None:
    f = PrivacyFilter.create(include_domains=["intranet.corp"])
    assert f.apply(snap(url="https://wiki.intranet.corp/page")) is not None
    assert f.apply(snap(url="https://news.example.org/")) is None
    # a window without a URL (not a browser page) is not a domain decision
    assert f.apply(snap(app="EXCEL.EXE", exe_path="", url="")) is not None


def test_excluded_window_makes_no_ui_event_and_empty_hid_context() -> None:
    ident = Identity(agent_id="a-1", user="alice", domain="corp", host="pc1")
    rec = Recorder(ident, privacy=PrivacyFilter.create(exclude_domains=["bank.example"]))
    events = rec.observe(snap(url="https://online.bank.example/account?id=7", title="My account - Bank"))
    events += rec.observe(InputObservation(ts=T0 + timedelta(seconds=1), kind="key", injected=False))
    assert [e.type for e in events] == ["HardwareKeyboardEvent"]
    blob = b"".join(encode_event(e) for e in events)
    assert b"bank" not in blob.lower() and b"My account" not in blob


# ---- URLs and redaction ---------------------------------------------------------------------------


def test_query_and_fragment_dropped_by_default() -> None:
    out = PrivacyFilter.create().apply(snap())
    assert out is not None and out.url == "https://mail.example.com/inbox"


def test_query_kept_when_configured() -> None:
    out = PrivacyFilter.create(keep_query=True).apply(snap())
    assert out is not None and out.url == "https://mail.example.com/inbox?token=abc#msg-1"


def test_redaction_applies_to_titles_tabs_urls_paths_and_hierarchy() -> None:
    f = PrivacyFilter.create(redact=[r"\b\d{3}-\d{2}-\d{4}\b", r"(?i)patient [a-z]+"], keep_query=True)
    out = f.apply(snap(
        title="Record 123-45-6789 - Patient Smith", tab="Patient Smith", url="https://x.org/r/123-45-6789?q=1",
        file_path="/home/a/Patient Jones.docx", sheet="123-45-6789",
        hierarchy=[UiNode(name="Patient Smith", control_type="TabItem")],
    ))
    assert out is not None
    assert out.title == "Record [redacted] - [redacted]"
    assert out.tab == "[redacted]"
    assert out.url == "https://x.org/r/[redacted]?q=1"
    assert out.file_path == "/home/a/[redacted].docx"
    assert out.sheet == "[redacted]"
    assert out.hierarchy == [UiNode(name="[redacted]", control_type="TabItem")]


def test_redaction_applies_to_field_values_in_extended_mode() -> None:
    f = PrivacyFilter.create(extended_mode=True, redact=[r"\d{16}"])
    out = f.apply(snap(fields=[FieldValue(name="Card", control_type="Edit", value="4111111111111111")]))
    assert out is not None
    assert out.fields == [FieldValue(name="Card", control_type="Edit", value="[redacted]")]


def test_bad_redaction_pattern_is_a_clear_error() -> None:
    with pytest.raises(PrivacySettingsError, match=r"privacy_redact pattern '\(unclosed'"):
        PrivacyFilter.create(redact=["(unclosed"])


@given(st.text(max_size=40), st.text(max_size=20), st.text(max_size=20))
def test_strip_query_never_keeps_a_query_or_fragment(path: str, query: str, frag: str) -> None:
    url = f"https://h.example/{path}?{query}#{frag}"
    out = strip_query(url)
    assert "?" not in out and "#" not in out
    assert url_host(out) == url_host(url)


# ---- settings ---------------------------------------------------------------------------------------


def test_from_settings_reads_attributes_keys_and_text_forms() -> None:
    f = PrivacyFilter.from_settings({
        "privacy_exclude_apps": "keepass.exe, 1password",
        "privacy_include_domains": ["corp.example"],
        "privacy_redact": '["\\\\d{3,4}", "secret"]',
        "privacy_keep_query": "true",
        "extended_mode": True,
    })
    assert f.exclude_apps == {"keepass.exe", "1password"}
    assert f.include_domains == ("corp.example",)
    assert [p.pattern for p in f.redact] == [r"\d{3,4}", "secret"]
    assert f.keep_query and f.extended_mode
    g = PrivacyFilter.from_settings(SimpleNamespace(privacy_redact="a{1,2}\nb,c"))
    assert [p.pattern for p in g.redact] == ["a{1,2}", "b,c"]  # never split on commas
    assert not g.keep_query and not g.extended_mode and g.include_apps == frozenset()


def test_from_agent_settings_uses_the_agents_exclude_lists() -> None:
    settings = load_agent_settings(env={
        # one name per setting (issue 19): the former short names exclude_apps / exclude_domains are
        # refused with a message naming these (tests/test_settings_convention.py)
        "DESKTRACE_PRIVACY_EXCLUDE_APPS": "KeePass.exe", "DESKTRACE_PRIVACY_EXCLUDE_DOMAINS": "bank.example",
        "DESKTRACE_EXTENDED_MODE": "true",
    })
    f = PrivacyFilter.from_settings(settings)
    assert f.apply(snap(app="KeePass.exe", exe_path="", url="")) is None
    assert f.apply(snap(url="https://bank.example/")) is None
    assert f.extended_mode
