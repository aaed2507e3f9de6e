"""Privacy filter cost, run by hand: ``nice .venv/bin/python bench/bench_privacy.py [--seconds 3]``.

Window snapshots as a desktop produces them (browser pages with URLs in the address bar and sometimes in
the title, mail with addresses, spreadsheets, terminals, a few long titles) go through
:class:`agent.privacy.PrivacyFilter.apply`. Baseline in the same run: the filter with every default
redaction rule turned off (URL cleaning only). Printed: snapshots per second and microseconds per snapshot
for the baseline, the default filter, and the default filter with ``exclude_domains`` (host names in
titles are then looked up too), with the ratio to the baseline. An agent sees a few snapshots per second
at most; anything above ~10,000/s is noise on the agent's budget.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.observations import WindowSnapshot
from agent.privacy import DEFAULT_RULES, PrivacyFilter

T0 = datetime(2024, 3, 4, 9, tzinfo=UTC)


def snapshots(n: int, seed: int = 1) -> list[WindowSnapshot]:
    rnd = random.Random(seed)
    pages = [
        ("Pull request #4821 · acme/desktrace - Google Chrome", "https://github.com/acme/desktrace/pull/4821?w=1"),
        ("Inbox (12) - alice.smith@example.com - Gmail - Mozilla Firefox", "https://mail.google.com/mail/u/0/#inbox"),
        ("Invoice 2024-0042 - Billing — Mozilla Firefox", "https://billing.example/invoices/42?token=abc123"),
        ("https://alice:S3cr3t@intranet.corp.example/wiki/Start - Chromium", ""),
        ("Online banking - Account 0532013000 - bank.example - Google Chrome", "https://bank.example/acct"),
    ]
    other = [
        ("Q3 budget (draft 7).xlsx - Excel", ""),
        ("alice@build01: ~/src/desktrace", ""),
        ("Re: Meeting on Thursday \u2013 bob.jones@firma.example \u2013 Thunderbird", ""),
        ("README.md - Visual Studio Code", ""),
        ("Long title " + " ".join(f"word{i}" for i in range(300)), ""),
    ]
    out = []
    for i in range(n):
        title, url = rnd.choice(pages if rnd.random() < 0.6 else other)
        out.append(
            WindowSnapshot(ts=T0, window_id=str(i % 50), app="firefox", title=title, tab=title, url=url)
        )
    return out


def rate(f: PrivacyFilter, snaps: list[WindowSnapshot], seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for s in snaps:
            f.apply(s)
        done += len(snaps)
    return done / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per variant (default 3)")
    args = parser.parse_args()
    snaps = snapshots(1000)
    variants = {
        "baseline (URL cleaning only)": PrivacyFilter.create(default_rules_off=list(DEFAULT_RULES)),
        "default rules": PrivacyFilter.create(),
        "default rules + exclude_domains": PrivacyFilter.create(
            exclude_domains=["bank.example", "x.example"]
        ),
    }
    base = 0.0
    for name, f in variants.items():
        r = rate(f, snaps, args.seconds)
        base = base or r
        print(f"{name:34s} {r:10,.0f} snapshots/s  {1e6 / r:7.1f} us each  x{base / r:.2f} of baseline time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
