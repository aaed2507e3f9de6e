"""The one Prometheus scraper of the tests: GET an endpoint, read samples from the text exposition."""

from __future__ import annotations

import urllib.error
import urllib.request


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """``(status, body)`` of a GET on ``url``; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError:
        return 0, ""


def scrape(port: int, path: str = "/metrics", timeout: float = 3.0) -> tuple[int, str]:
    """``(status, body)`` of a GET on a loopback health server (status 0 when it does not answer)."""
    return http_get(f"http://127.0.0.1:{port}{path}", timeout)


def samples(text: str, name: str, **labels: str) -> list[float]:
    """The values of the samples named ``name`` whose labels include ``labels``, in exposition order."""
    from prometheus_client.parser import text_string_to_metric_families

    return [
        float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the first matching sample, or None when there is none."""
    found = samples(text, name, **labels)
    return found[0] if found else None


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the matching samples (0 when there is none)."""
    return sum(samples(text, name, **labels))
