"""Legacy clients as they really behave, against a real ``desktrace-gateway`` (uvicorn) and a real Kafka:

- the exact bytes Windows PowerShell 5.1 sends (``Invoke-RestMethod -Method Post -Body $json
  -ContentType 'application/json'``: ISO-8859-1 body, ``Expect: 100-continue``, keep-alive), on a raw
  socket, and a UTF-8 client for the same name: one user key;
- bodies over the limit get 413 before they are read (no ``100 Continue`` is sent);
- a hand-written hostile corpus never gets a 5xx, and nothing of a refused body reaches Kafka;
- reports the pipeline would drop get 422 ``ts_too_old``;
- per-client tokens in the URL (``?token=``), scoped to user keys or domains; no token ever in a log line.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from proto.topics import Topics
from tests.support.gateway import running_gateway
from tests.support.kafka import at_least, consume_until
from tests.test_gateway_legacy import read_topic

pytestmark = [pytest.mark.kafka]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
SHOP = "shop-token-7c1d0e5f9a2b4c6d"
CORP = "corp-token-3e8f1a6b0c9d2e7f"
ADMIN = "admin-token-5a4b3c2d1e0f9a8b"
TOKENS = f"# tokens of the test's clients\n{SHOP}  shop\\till1, shop\\josé\n{CORP}  corp\\*\n{ADMIN}  *\n"
PS51_AGENT = "Mozilla/5.0 (Windows NT; Windows NT 10.0; en-US) WindowsPowerShell/5.1.19041.4648"
RECENT = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)


def convertto_json(fields: dict[str, str]) -> str:
    """What Windows PowerShell 5.1's ``ConvertTo-Json`` writes for a hashtable of strings: indented, CRLF,
    two spaces after the colon, non-ASCII characters as they are, ``/`` escaped."""
    values = {k: json.dumps(v, ensure_ascii=False).replace("/", "\\/") for k, v in fields.items()}
    lines = [f'    "{k}":  {v}' for k, v in values.items()]
    return "{\r\n" + ",\r\n".join(lines) + "\r\n}"


def ts(minutes: int) -> str:
    return (RECENT + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def gateway(kafka_bootstrap: str, topics: Topics, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ARTIFACTS.mkdir(exist_ok=True)
    token_file = tmp_path / "legacy-tokens"
    token_file.write_text(TOKENS, encoding="utf-8")
    log = ARTIFACTS / "gateway-hostile.log"
    env = {
        "DESKTRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DESKTRACE_TOPIC_PREFIX": topics.prefix,
        "DESKTRACE_LEGACY_DOMAIN": "SHOP",
        "DESKTRACE_LEGACY_TZ": "UTC",
        "DESKTRACE_LEGACY_TOKENS_FILE": str(token_file),
        "DESKTRACE_LEGACY_MAX_BODY_BYTES": "65536",
        "DESKTRACE_PG_DSN": "",
        "DESKTRACE_LOG_LEVEL": "DEBUG",  # even debug logging must not show a query string
        "DESKTRACE_LOG_FORMAT": "text",
    }
    with running_gateway(env, log_path=log) as url:
        yield url, log


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    got_continue: bool


def _read_response(sock: socket.socket, buf: bytes) -> tuple[int, dict[str, str], bytes, bytes]:
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a response: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length], rest[length:]


def powershell_post(
    url: str, body: bytes, *, path: str = "/api/report", content_type: str = "application/json",
    content_length: int | None = None,
) -> Answer:
    """One POST exactly as Windows PowerShell 5.1's Invoke-RestMethod sends it: headers with
    ``Expect: 100-continue``, then the body only once ``100 Continue`` arrived (a final answer instead
    means the body is never sent)."""
    host = urlsplit(url)
    n = len(body) if content_length is None else content_length
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"User-Agent: {PS51_AGENT}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Host: {host.netloc}\r\n"
        f"Content-Length: {n}\r\n"
        "Expect: 100-continue\r\n"
        "Connection: Keep-Alive\r\n\r\n"
    ).encode("latin-1")
    with socket.create_connection((host.hostname, host.port), timeout=30) as sock:
        sock.sendall(head)
        status, headers, data, rest = _read_response(sock, b"")
        got_continue = status == 100
        if got_continue:
            sock.sendall(body)
            status, headers, data, _ = _read_response(sock, rest)
        return Answer(status, headers, data, got_continue)


def test_powershell_51_latin1_and_a_utf8_client_are_one_user(
    gateway: tuple[str, Path], kafka_bootstrap: str, topics: Topics
) -> None:
    url, _ = gateway
    path = f"/api/report?token={SHOP}"
    latin1 = convertto_json({"user": "José", "state": "working", "ts": ts(0)})
    a = powershell_post(url, latin1.encode("latin-1"), path=path)
    assert a.got_continue and a.status == 200 and json.loads(a.body) == {"success": True}, a
    utf8 = convertto_json({"user": "JOSÉ", "state": "stopped", "ts": ts(30)})
    b = powershell_post(url, utf8.encode(), path=path, content_type="application/json; charset=utf-8")
    assert b.status == 200, b
    # curl/Python style: UTF-8 without charset, the token in a header
    r = httpx.post(
        url + "/api/report",
        content=json.dumps({"user": "shop\\josé", "state": "working", "ts": ts(45)}, ensure_ascii=False),
        headers={"Content-Type": "application/json", "X-Desktrace-Token": SHOP},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    events = asyncio.run(read_topic(kafka_bootstrap, topics.presence, expect=3))
    assert sorted((e.state, e.user.lower(), e.domain.lower()) for e in events) == [
        ("stopped", "josé", "shop"), ("working", "josé", "shop"), ("working", "josé", "shop"),
    ]
    assert len({e.agent_id for e in events}) == 1  # one legacy "agent" per user key


def test_bodies_over_the_limit_get_413_before_they_are_read(gateway: tuple[str, Path]) -> None:
    url, _ = gateway
    path = f"/api/report?token={ADMIN}"
    # 12 MB announced with Expect: 100-continue: refused from the headers, the body is never asked for
    big = powershell_post(url, b"", path=path, content_length=12 * 1024 * 1024)
    assert big.status == 413 and not big.got_continue, big
    assert json.loads(big.body)["reason"] == "body_too_large"
    assert big.headers.get("connection") == "close"
    # just over the limit, sent whole without Expect
    pad = "x" * 65536
    r = httpx.post(
        url + path, content=json.dumps({"user": "a", "state": "working", "pad": pad}), timeout=30,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["success"] is False
    # chunked (no Content-Length): refused once the limit is passed

    def chunks() -> Iterator[bytes]:
        yield b'{"user": "a", "state": "working", "pad": "'
        for _ in range(200):
            yield b"y" * 1024
        yield b'"}'

    r = httpx.post(url + path, content=chunks(), headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413
    # the server is fine afterwards
    assert httpx.get(url + "/healthz", timeout=30).status_code == 200


GOOD = [
    {"user": "till1", "state": "working", "ts": ts(1)},
    {"user": "CORP\\alice", "state": "stopped", "ts": ts(2), "junk": "JUNK-MARKER-1", "x": {"y": [1, 2]}},
]
HOSTILE: list[tuple[bytes, str, int]] = [
    # (body, Content-Type, expected status)
    (b"", "application/json", 400),
    (b"{", "application/json", 400),
    (b"null", "application/json", 422),
    (b"[]", "application/json", 422),
    (b"1e999999", "application/json", 422),
    (b'"\\ud800"', "application/json", 400),  # a lone surrogate is not valid JSON text
    (b'{"user": "\\ud800", "state": "working"}', "application/json", 400),
    (b"[" * 100_000 + b"]" * 100_000, "application/json", 413),
    (b"[" * 30_000 + b"]" * 30_000, "application/json", 400),
    (b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "application/json", 400),
    (b'{"user":"jos\xe9","state":"working","junk":"JUNK-MARKER-2"}', "application/json; charset=utf-8", 400),
    (b'{"user":"a\x00","state":"working","junk":"JUNK-MARKER-3"}', "application/json", 400),
    (b'{"user":"a","state":"working","junk":"JUNK-MARKER-4"}', "application/json; charset=nope", 400),
    (b'{"user":"a\\u0000b","state":"working","junk":"JUNK-MARKER-5"}', "application/json", 422),
    (b'{"user":"a\\u0085b","state":"working","junk":"JUNK-MARKER-6"}', "application/json", 422),
    (b'{"user":"' + b"a" * 600 + b'","state":"working","junk":"JUNK-MARKER-7"}', "application/json", 422),
    (b'{"user":"a","state":"working","ts":"' + b"9" * 5000 + b'"}', "application/json", 422),
    (b'{"user":"a","state":"working","ts":"0001-01-01T00:00:00Z","j":"JUNK-MARKER-8"}', "text/plain", 422),
    (b'{"user":"a","state":"working","ts":"2020-01-01T00:00:00Z","j":"JUNK-MARKER-9"}', "text/plain", 422),
    (b'{"user":"a","state":"working","ts":"9999-12-31T23:59:59Z","j":"JUNK-MARKER-10"}', "text/plain", 422),
    (b'{"user":"a","state":"working","ts":"2024-02-30T00:00:00Z"}', "application/json", 422),
    (b'{"user":"a","state":"working","ts":"T"}', "application/json", 422),
    (b'{"user":["a"],"state":"working"}', "application/json", 422),
    (b'{"user":"a","state":"WORKING"}', "application/json", 422),
    (b"\xff\xfe{\x00}\x00", "application/json", 400),
    (b"\xef\xbb\xbf\xef\xbb\xbf{}", "application/json", 400),
    (b"user=a%00&state=working&junk=JUNK-MARKER-12", "application/x-www-form-urlencoded", 400),
    (b"state=working&junk=JUNK-MARKER-13", "application/x-www-form-urlencoded", 422),
    (b"user=a&state=sleeping", "application/x-www-form-urlencoded", 422),
    (b"<xml/>", "application/xml", 400),
    (b"\x1f\x8b\x08\x00", "application/json", 400),
]


def test_hostile_corpus_gets_4xx_and_nothing_refused_is_stored(
    gateway: tuple[str, Path], kafka_bootstrap: str, topics: Topics
) -> None:
    url, _ = gateway
    with httpx.Client(base_url=url, timeout=60, params={"token": ADMIN}) as c:
        wrong = []
        for n, (body, ctype, status) in enumerate(HOSTILE):
            r = c.post("/api/report", content=body, headers={"Content-Type": ctype})
            if r.status_code != status:
                wrong.append((n, body[:60], r.status_code, r.text[:200]))
            assert r.json()["success"] is False and r.json()["error"] and r.json()["reason"], (n, r.text)
        assert not wrong
        for body in GOOD:
            r = c.post("/api/report", json=body)
            assert r.status_code == 200, r.text
        # a report older than the pipeline counts: 422, never a false success
        old = (datetime.now(UTC) - timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
        stale = {"user": "till1", "state": "stopped", "ts": old, "j": "JUNK-MARKER-11"}
        r = c.post("/api/report", json=stale)
        assert r.status_code == 422 and r.json()["reason"] == "ts_too_old", r.text
        metrics = c.get("/metrics").text
    raw = asyncio.run(_raw_values(kafka_bootstrap, topics.presence, expect=len(GOOD)))
    assert len(raw) == len(GOOD)
    assert not [v for v in raw if b"JUNK-MARKER" in v]  # unknown fields are never stored
    assert 'desktrace_gateway_rejected_total{reason="ts_too_old"} 2.0' in metrics
    assert 'desktrace_gateway_requests_total{method="POST",route="/api/report",status="500"}' not in metrics


async def _raw_values(bootstrap: str, topic: str, expect: int) -> list[bytes]:
    records = await consume_until(bootstrap, topic, at_least(expect), 30, settle_s=1.5)
    return [r.value for r in records if r.value is not None]


def test_tokens_in_the_url_are_scoped_and_never_logged(gateway: tuple[str, Path]) -> None:
    url, log = gateway
    body = {"user": "till1", "state": "working", "ts": ts(5)}
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/api/report", json=body)
        assert r.status_code == 401 and "?token=" in r.json()["error"]
        assert c.post("/api/report?token=wrong-token-0000000000", json=body).status_code == 401
        assert c.post(f"/api/report?token={SHOP}", json=body).status_code == 200
        # the shop token may not write another shop user, nor anyone of another domain
        r = c.post(f"/api/report?token={SHOP}", json={**body, "user": "till2"})
        assert r.status_code == 403 and r.json()["reason"] == "forbidden_user"
        # corp\* writes any corp login, never hr\boss
        assert c.post(f"/api/report?token={CORP}", json={**body, "user": "CORP\\Alice"}).status_code == 200
        r = c.post(f"/api/report?token={CORP}", json={**body, "user": "HR\\boss"})
        assert r.status_code == 403
        bearer = {"Authorization": f"Bearer {CORP}"}
        r = c.post("/api/report", json={**body, "user": "HR\\boss"}, headers=bearer)
        assert r.status_code == 403
        assert c.post(f"/api/report?token={ADMIN}", json={**body, "user": "HR\\boss"}).status_code == 200
        # unknown paths and bad requests with a token in the query do not log it either
        c.get(f"/nowhere?token={SHOP}")
        c.post(f"/api/report?token={SHOP}&x=%ff", content=b"{")
    time.sleep(0.5)
    text = log.read_text(encoding="utf-8", errors="replace")
    assert text.strip(), "the gateway logged nothing at DEBUG: the check below would prove nothing"
    for secret in (SHOP, CORP, ADMIN, "token="):
        assert secret not in text


def test_a_client_that_leaves_mid_body_is_no_server_error(gateway: tuple[str, Path]) -> None:
    url, _ = gateway
    host = urlsplit(url)
    for _ in range(3):
        with socket.create_connection((host.hostname, host.port), timeout=30) as sock:
            sock.sendall(
                f"POST /api/report?token={ADMIN} HTTP/1.1\r\nHost: {host.netloc}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n".encode()
                + b'{"user": "a", "st'
            )
            sock.shutdown(socket.SHUT_WR)
            try:
                sock.recv(65536)
            except OSError:
                pass
    time.sleep(0.5)
    metrics = httpx.get(url + "/metrics", timeout=30).text
    assert 'route="/api/report",status="500"' not in metrics
    assert 'desktrace_gateway_rejected_total{reason="incomplete_body"} 3.0' in metrics
