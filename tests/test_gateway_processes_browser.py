"""The Processes page in headless Chromium, as a person sees it: log in, pick Alice's day, see the graph
drawn (the image loads and has a size) and the recurring tasks. Screenshot in test-artifacts/."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.auth import hash_password
from tests.mining_fixture import load_fixture
from tests.support.gateway import running_gateway
from tests.test_gateway_browser import ARTIFACTS, chromium

pytestmark = [pytest.mark.browser, pytest.mark.postgres]

PASSWORD = "processes-browser-password"


@pytest.fixture
def gateway_url(fresh_pg_dsn: str) -> Iterator[str]:
    asyncio.run(load_fixture(fresh_pg_dsn))
    env = {
        "DESKTRACE_PG_DSN": fresh_pg_dsn,
        "DESKTRACE_KAFKA_BOOTSTRAP": "127.0.0.1:1",  # pages need no Kafka
        "DESKTRACE_WEB_USERS": f"boss:{hash_password(PASSWORD)}",
        "DESKTRACE_LEGACY_TZ": "Europe/Berlin",
    }
    with running_gateway(env, log_path=ARTIFACTS / "gateway-processes.log") as url:
        yield url


def test_processes_page_in_chromium(gateway_url: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="desktrace-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"],
            viewport={"width": 1200, "height": 900},
        )
        context.set_default_timeout(15_000)
        page = context.new_page()
        response = page.goto(f"{gateway_url}/processes")
        assert response is not None and response.status == 401
        page.fill("input[name=username]", "boss")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/processes")
        page.fill("input[name=start]", "2026-03-29")
        page.fill("input[name=end]", "2026-03-29")
        page.select_option("select[name=user]", "corp\\alice")
        page.click("form.views button[type=submit]")
        page.wait_for_url("**/processes?*user=corp*")
        img = page.locator("img#dfg")
        expect(img).to_be_visible()
        # The SVG decoded and laid out: a real picture, not a broken-image icon.
        width = page.evaluate("document.getElementById('dfg').naturalWidth")
        assert width > 200
        expect(page.locator("#task-table")).to_contain_text("Outlook → Excel → Chrome")
        expect(page.locator("#edges")).to_contain_text("Chrome")
        page.screenshot(path=str(ARTIFACTS / "processes.png"), full_page=True)
        context.close()
    assert Path(ARTIFACTS / "processes.png").stat().st_size > 0
