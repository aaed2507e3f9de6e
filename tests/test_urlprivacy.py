"""Hostile URLs and titles: what users rely on is that credentials, page content hidden in a URL, query
tokens, e-mail addresses and account numbers never reach an event, in any of the shapes browsers show them
(address bar with or without scheme, a page title that is its URL, a window title with the browser's name)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.observations import WindowSnapshot
from agent.privacy import PASSWORD_NAME, PrivacyFilter, PrivacySettingsError
from common.urls import clean_url, clean_urls_in_text, domain_matches, host_key, url_host
from proto.events import FieldValue

T0 = datetime(2024, 5, 6, 9, 0, 0, tzinfo=UTC)

# (url as a browser or a title shows it, what may be recorded, its host)
HOSTILE_URLS: list[tuple[str, str, str]] = [
    ("https://alice:S3cr3t@bank.example/acct?id=9", "https://bank.example/acct", "bank.example"),
    ("HTTPS://ALICE:S3CR3T@BANK.EXAMPLE/Acct", "https://bank.example/Acct", "bank.example"),
    ("ftp://user:pw@files.example/pub/x.zip", "ftp://files.example/pub/x.zip", "files.example"),
    ("ssh://root:toor@10.0.0.5:2222/", "ssh://10.0.0.5:2222/", "10.0.0.5"),
    ("https://alice@bank.example/", "https://bank.example/", "bank.example"),  # user name alone
    # percent-encoded userinfo, and userinfo with further @ (the host follows the last one)
    ("https://alice%40corp.example:p%40ss%3Aw0rd@bank.example/", "https://bank.example/", "bank.example"),
    ("https://user:p@ss@bank.example/x", "https://bank.example/x", "bank.example"),
    ("//alice:pw@bank.example/x?y", "//bank.example/x", "bank.example"),
    # a phishing link's "userinfo" is a decoy: the host is what the browser connects to
    ("https://bank.example@evil.example/login", "https://evil.example/login", "evil.example"),
    # address bars without scheme (Chrome, Edge)
    ("alice:pw@bank.example/acct?x=1", "bank.example/acct", "bank.example"),
    ("bank.example/acct?id=9#top", "bank.example/acct", "bank.example"),
    ("localhost:8080/admin?key=k", "localhost:8080/admin", "localhost"),
    ("10.1.2.3:8443/login?next=/", "10.1.2.3:8443/login", "10.1.2.3"),
    # a backslash is a slash in web URLs: the "userinfo" after it is a path, the host stays the first one
    ("https://bank.example\\@evil.example/x", "https://bank.example/@evil.example/x", "bank.example"),
    ("https:bank.example/x?y", "https://bank.example/x", "bank.example"),
    # content in the URL: scheme only
    ("data:text/html,<form>password=hunter2</form>", "data:", ""),
    ("data:text/html;base64,PHA+cGFzc3dvcmQ9aHVudGVyMjwvcD4=", "data:", ""),
    ("DATA:text/plain,hunter2", "data:", ""),
    ("javascript:fetch('/x?pw='+'hunter2')", "javascript:", ""),
    ("JavaScript:alert(1)", "javascript:", ""),
    ("vbscript:msgbox(1)", "vbscript:", ""),
    ("blob:https://alice:pw@app.example/0b3c7d9e-1234", "blob:", ""),
    ("mailto:alice@example.com?subject=salary", "mailto:", ""),
    ("tel:+49301234567", "tel:", ""),
    ("magnet:?xt=urn:btih:abcdef", "magnet:", ""),
    ("otpauth://totp/Bank:alice?secret=JBSWY3DPEHPK3PXP", "otpauth:", ""),
    ("somescheme:opaque-secret-text", "somescheme:", ""),
    # file: scheme and file name only
    ("file:///home/alice/tax/2024%20return.pdf", "file:2024%20return.pdf", ""),
    ("file://fileserver/hr/salaries/plan.xlsx?x", "file:plan.xlsx", ""),
    ("file:///C:/Users/alice/Documents/secret.docx", "file:secret.docx", ""),
    ("file:///", "file:", ""),
    # query, fragment and path parameters dropped
    ("https://shop.example/cart;jsessionid=ABC123?x=1", "https://shop.example/cart", "shop.example"),
    ("https://app.example/#/reset?token=SECRET123", "https://app.example/", "app.example"),
    # IPv6 literals keep their brackets; ports stay; a port that is no number goes
    ("https://u:p@[2001:db8::1]:8443/path?q#f", "https://[2001:db8::1]:8443/path", "2001:db8::1"),
    ("http://[::1]/x", "http://[::1]/x", "::1"),
    ("https://bank.example:notaport/x", "https://bank.example/x", "bank.example"),
    # internationalised hosts: as given, lower case
    ("https://Anna:pw@Bücher.Example/straße?x=1", "https://bücher.example/straße", "bücher.example"),
    ("https://xn--bcher-kva.example/?q", "https://xn--bcher-kva.example/", "xn--bcher-kva.example"),
    ("https://пример.испытание/путь?a=1", "https://пример.испытание/путь", "пример.испытание"),
    # wrappers keep their prefix around the cleaned URL; names of about: pages stay
    ("view-source:https://u:p@a.example/x?y", "view-source:https://a.example/x", "a.example"),
    ("about:blank", "about:blank", ""),
    ("chrome://settings/passwords", "chrome://settings/passwords", "settings"),
    # unparsable: never given back as it was
    ("http://u:p@[::1", "http:", ""),
    ("", "", ""),
]


@pytest.mark.parametrize(("url", "expected", "host"), HOSTILE_URLS)
def test_hostile_urls(url: str, expected: str, host: str) -> None:
    assert clean_url(url) == expected
    assert url_host(url) == host
    for secret in ("S3cr3t", "pw@", "hunter2", "SECRET123", "salary", "p%40ss", "JBSWY3", "alice"):
        assert secret.lower() not in clean_url(url).lower()


def test_keep_query_keeps_query_but_never_userinfo_or_content() -> None:
    assert clean_url("https://alice:pw@a.example/p?q=1#f", keep_query=True) == "https://a.example/p?q=1#f"
    assert clean_url("data:text/html,hunter2", keep_query=True) == "data:"
    assert clean_url("file:///home/a/x.pdf?p", keep_query=True) == "file:x.pdf"


def test_idn_spellings_match_the_same_domain() -> None:
    assert host_key("Bücher.Example.") == host_key("xn--bcher-kva.example") == "xn--bcher-kva.example"
    assert domain_matches("shop.bücher.example", "xn--bcher-kva.example")
    assert domain_matches("shop.xn--bcher-kva.example", "bücher.example")
    assert not domain_matches("xbücher.example", "bücher.example")


# (window title, what may be recorded)
HOSTILE_TITLES: list[tuple[str, str]] = [
    # a page without <title>: the browser shows its URL
    ("https://alice:S3cr3t@bank.example/acct?id=9 - Mozilla Firefox",
     "https://bank.example/acct - Mozilla Firefox"),
    ("ftp://user:pw@files.example/pub/ — Mozilla Firefox", "ftp://files.example/pub/ — Mozilla Firefox"),
    ("data:text/html,<p>password=hunter2 and more</p> - Google Chrome", "data: - Google Chrome"),
    ("javascript:alert('hunter2')", "javascript:"),
    ("Login (https://u:p@sso.example/cb?code=XYZ).", "Login (https://sso.example/cb)."),
    # an address bar's shape, without scheme, copied into a title
    ("alice:S3cr3t@bank.example/acct?id=9 - Chromium", "bank.example/acct - Chromium"),
    ("Open alice:S3cr3t@10.0.0.5:8080/admin now", "Open 10.0.0.5:8080/admin now"),
    # e-mail addresses
    ("Inbox (3) - alice.smith@example.com - Gmail", "Inbox (3) - [redacted] - Gmail"),
    ("Re: Gehalt \u2013 jürgen.müller@firma.example \u2013 Thunderbird",
     "Re: Gehalt \u2013 [redacted] \u2013 Thunderbird"),
    # query tokens outside a full URL
    ("Reset password ?token=SECRET123 - Chromium", "Reset password ?[redacted] - Chromium"),
    ("app.example/reset?token=SECRET123&user=alice - Chromium", "app.example/reset?[redacted] - Chromium"),
    # long digit runs: card and account numbers
    ("Card 4111 1111 1111 1111 - Checkout", "Card [redacted] - Checkout"),
    ("Card 4111-1111-1111-1111 - Checkout", "Card [redacted] - Checkout"),
    ("Amex 3782 822463 10005", "Amex [redacted]"),
    ("Account 0532013000 statement", "Account [redacted] statement"),
    ("IBAN DE89 3704 0044 0532 0130 00 - Online banking", "IBAN [redacted] - Online banking"),
    ("IBAN DE89370400440532013000", "IBAN [redacted]"),
    # what must stay: short numbers, dates, times, versions
    ("Invoice 42 - notes", "Invoice 42 - notes"),
    ("Report 2024-03-04 14:30 v1.2.3 - LibreOffice Calc",
     "Report 2024-03-04 14:30 v1.2.3 - LibreOffice Calc"),
    ("Q3 2024 budget (draft 7).xlsx - Excel", "Q3 2024 budget (draft 7).xlsx - Excel"),
    ("README.md - Visual Studio Code", "README.md - Visual Studio Code"),
    # words that only look like a scheme
    ("JavaScript: The Good Parts - Chromium", "JavaScript: The Good Parts - Chromium"),
    ("Data: Q3 numbers.xlsx - Excel", "Data: Q3 numbers.xlsx - Excel"),
    ("Hotel: booking confirmed - Thunderbird", "Hotel: booking confirmed - Thunderbird"),
    ("Tel: reception - Notes", "Tel: reception - Notes"),
    # and the real ones
    ("data:,hunter2 - Chromium", "data: - Chromium"),
    ("tel:+49301234567 - Chromium", "tel: - Chromium"),
    ("blob:https://app.example/0b3c - Chromium", "blob: - Chromium"),
]


@pytest.mark.parametrize(("title", "expected"), HOSTILE_TITLES)
def test_hostile_titles_are_cleaned_by_default(title: str, expected: str) -> None:
    f = PrivacyFilter.create()
    out = f.apply(WindowSnapshot(ts=T0, window_id="1", app="firefox", title=title, tab=title))
    assert out is not None
    assert out.title == expected and out.tab == expected


def test_urls_in_text_keep_surrounding_punctuation() -> None:
    assert clean_urls_in_text("see https://a.example/x?y, then") == "see https://a.example/x, then"


@pytest.mark.parametrize(
    ("rule", "title", "kept"),
    [
        ("email", "Chat with bob@example.com", "Chat with bob@example.com"),
        ("long_digits", "Ticket 123456789", "Ticket 123456789"),
        ("url_query", "Reset ?token=SECRET123", "Reset ?token=SECRET123"),
        # with the IBAN rule off, its digit groups are still a long digit run
        ("iban", "IBAN DE89 3704 0044 0532 0130 00", "IBAN DE89 [redacted]"),
    ],
)
def test_each_default_rule_can_be_turned_off(rule: str, title: str, kept: str) -> None:
    on = PrivacyFilter.create().apply(WindowSnapshot(ts=T0, window_id="1", title=title))
    off = PrivacyFilter.from_settings({"privacy_default_redact_off": rule}).apply(
        WindowSnapshot(ts=T0, window_id="1", title=title)
    )
    assert on is not None and off is not None
    assert "[redacted]" in on.title
    assert off.title == kept != on.title


def test_unknown_default_rule_name_is_a_clear_error() -> None:
    with pytest.raises(PrivacySettingsError, match="emails"):
        PrivacyFilter.create(default_rules_off=["emails"])


def test_userinfo_in_titles_is_removed_even_with_every_rule_off() -> None:
    f = PrivacyFilter.create(default_rules_off=["email", "url_query", "long_digits", "iban"])
    out = f.apply(WindowSnapshot(ts=T0, window_id="1", title="https://alice:S3cr3t@bank.example/ - Firefox"))
    assert out is not None and out.title == "https://bank.example/ - Firefox"


@pytest.mark.parametrize(
    ("title", "excluded"),
    [
        ("Online banking - bank.example — Mozilla Firefox", True),
        ("https://online.bank.example/login — Mozilla Firefox", True),
        ("alice:pw@secure.bank.example/x - Chromium", True),
        ("Statement from statements@bank.example - Thunderbird", True),
        ("BANK.EXAMPLE | Login - Google Chrome", True),
        ("Notes about notbank.example - Chromium", False),
        ("bank.example.evil.org - Chromium", False),
        ("Bank example - Chromium", False),
    ],
)
def test_exclude_domains_match_the_title_when_there_is_no_url(title: str, excluded: bool) -> None:
    f = PrivacyFilter.create(exclude_domains=["bank.example"])
    out = f.apply(WindowSnapshot(ts=T0, window_id="1", app="firefox", title=title, url=""))
    assert (out is None) is excluded


def test_a_known_url_decides_over_the_title() -> None:
    f = PrivacyFilter.create(exclude_domains=["bank.example"])
    snap = WindowSnapshot(ts=T0, window_id="1", title="Compare bank.example offers", url="https://news.example/")
    assert f.apply(snap) is not None


@pytest.mark.parametrize(
    "name",
    [
        "Password", "New password", "Passwort", "Kennwort", "PIN", "Пароль", "Введите пароль",
        "Mot de passe", "Contraseña", "Senha", "Password", "Hasło", "Wachtwoord", "密码", "密碼",
        "パスワード", "비밀번호", "Şifre", "Lösenord", "Salasana", "Heslo", "Jelszó", "Κωδικός",
        "كلمة المرور", "סיסמה", "Mật khẩu", "Kata sandi", "passcode", "pwd",
    ],
)
def test_password_field_names_in_many_languages(name: str) -> None:
    assert PASSWORD_NAME.search(name)
    f = PrivacyFilter.create(extended_mode=True)
    out = f.apply(WindowSnapshot(ts=T0, window_id="1", fields=[
        FieldValue(name=name, control_type="Edit", value="hunter2", edited=True)
    ]))
    assert out is not None and out.fields is not None
    assert out.fields[0].value is None and out.fields[0].password and out.fields[0].edited


@pytest.mark.parametrize(
    "name", ["User name", "Pinned notes", "Passenger", "Compass", "Benutzername", "E-Mail"]
)
def test_ordinary_field_names_keep_their_value(name: str) -> None:
    assert not PASSWORD_NAME.search(name)


def test_huge_titles_are_cut_before_cleaning() -> None:
    from agent.privacy import MAX_TEXT_CHARS

    title = "https://alice:S3cr3t@bank.example/x " + "a:" * 500_000  # 1 MB, a pathological window title
    out = PrivacyFilter.create(exclude_domains=["other.example"]).apply(
        WindowSnapshot(ts=T0, window_id="1", title=title)
    )
    assert out is not None
    assert len(out.title) <= MAX_TEXT_CHARS and out.title.endswith("\u2026")
    assert out.title.startswith("https://bank.example/x ") and "S3cr3t" not in out.title


def test_a_word_at_the_cut_is_dropped_whole() -> None:
    from agent.privacy import MAX_TEXT_CHARS

    title = "x" * (MAX_TEXT_CHARS - 20) + " alice.smith@example.com and more"
    out = PrivacyFilter.create().apply(WindowSnapshot(ts=T0, window_id="1", title=title))
    assert out is not None and "alice" not in out.title and out.title.endswith(" \u2026")
