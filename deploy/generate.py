"""Generates the Grafana dashboards and the Kubernetes PrometheusRule from one description each.

    python deploy/generate.py --write     # regenerate deploy/grafana/dashboards/*.json and deploy/k8s/base/prometheusrule.yaml
    python deploy/generate.py --check     # exit 1 when a generated file is stale (the test suite runs this)

Dashboards are described here as rows of panels, each with PromQL expressions; the alert rules are kept by
hand in deploy/prometheus/rules/desktrace.rules.yml (promtool tests them) and wrapped into the
PrometheusRule for the Prometheus Operator. tests/test_ops_metrics.py checks that every metric a panel or a
rule queries is exported by a running service.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
RULES = DEPLOY / "prometheus" / "rules" / "desktrace.rules.yml"
PROMETHEUS_RULE = DEPLOY / "k8s" / "base" / "prometheusrule.yaml"

Panel = tuple[str, str, list[tuple[str, str]]]  # (title, unit, [(expr, legend)])

PIPELINE: list[list[Panel]] = [
    [
        (
            "Ingest rate by topic",
            "ops",
            [("sum by (topic) (rate(desktrace_stream_events_total[5m]))", "{{topic}}")],
        ),
        (
            "Sink rows written /s",
            "ops",
            [("sum by (table) (rate(desktrace_sink_rows_written_total[5m]))", "{{table}}")],
        ),
        (
            "Gateway legacy reports /s",
            "ops",
            [
                ("sum(rate(desktrace_gateway_legacy_accepted_total[5m]))", "accepted"),
                ("sum(rate(desktrace_gateway_rejected_total[5m]))", "rejected"),
            ],
        ),
    ],
    [
        (
            "Consumer lag by group and partition",
            "short",
            [
                (
                    "sum by (job, topic, partition) (desktrace_sink_consumer_lag)",
                    "{{job}} {{topic}}/{{partition}}",
                ),
                (
                    "sum by (topic, partition) (desktrace_stream_consumer_lag)",
                    "stream {{topic}}/{{partition}}",
                ),
            ],
        ),
        (
            "Sink write latency p95",
            "s",
            [
                (
                    "histogram_quantile(0.95, sum by (le, table) (rate(desktrace_sink_write_seconds_bucket[5m])))",
                    "{{table}}",
                )
            ],
        ),
        (
            "Stream batch processing and commit p95",
            "s",
            [
                (
                    "histogram_quantile(0.95, sum by (le) (rate(desktrace_stream_batch_processing_seconds_bucket[5m])))",
                    "p95",
                ),
                (
                    "histogram_quantile(0.95, sum by (le) (rate(desktrace_stream_commit_seconds_bucket[5m])))",
                    "commit p95",
                ),
            ],
        ),
    ],
    [
        (
            "Dead letters /min",
            "short",
            [
                (
                    "sum by (error_class) (rate(desktrace_stream_deadlettered_total[5m])) * 60",
                    "stream {{error_class}}",
                ),
                (
                    "sum by (table, reason) (rate(desktrace_sink_rows_rejected_total[5m])) * 60",
                    "sink {{table}} {{reason}}",
                ),
            ],
        ),
        (
            "Sink retries /min",
            "short",
            [("sum by (table) (rate(desktrace_sink_retries_total[5m])) * 60", "{{table}}")],
        ),
        (
            "Seconds since last sink write",
            "s",
            [("time() - max by (job) (desktrace_sink_last_successful_write_timestamp_seconds)", "{{job}}")],
        ),
    ],
    [
        ("Services up", "short", [('up{job=~"desktrace.*"}', "{{job}} {{instance}}")]),
        (
            "Gateway request p95",
            "s",
            [
                (
                    "histogram_quantile(0.95, sum by (le) (rate(desktrace_gateway_request_duration_seconds_bucket[5m])))",
                    "p95",
                )
            ],
        ),
        (
            "Gateway Kafka send p95",
            "s",
            [
                (
                    "histogram_quantile(0.95, sum by (le) (rate(desktrace_gateway_kafka_send_seconds_bucket[5m])))",
                    "p95",
                )
            ],
        ),
    ],
]

FLEET: list[list[Panel]] = [
    [
        (
            "Agents heard from in the last 5 minutes",
            "short",
            [("sum(desktrace_stream_fleet_agents_heard_5m)", "agents")],
        ),
        (
            "Agents silent for more than 1 hour",
            "short",
            [("sum(desktrace_stream_fleet_agents_silent_1h)", "agents")],
        ),
        (
            "Spool drops reported by agents /h",
            "short",
            [("sum(rate(desktrace_stream_fleet_spool_dropped_total[1h])) * 3600", "drops")],
        ),
    ],
    [
        (
            "Agent versions in use",
            "short",
            [("sum by (agent_version) (desktrace_stream_fleet_agent_versions)", "{{agent_version}}")],
        ),
        (
            "Events by type /s",
            "ops",
            [("sum by (type) (rate(desktrace_stream_events_total[5m]))", "{{type}}")],
        ),
        (
            "Duplicate events /s (agent retries)",
            "ops",
            [("sum(rate(desktrace_stream_duplicate_events_total[5m]))", "duplicates")],
        ),
    ],
]

SESSIONS: list[list[Panel]] = [
    [
        ("Open sessions", "short", [("sum(desktrace_stream_open_sessions)", "open")]),
        ("Users with state", "short", [("sum(desktrace_stream_users)", "users")]),
        (
            "Sessions closed per minute",
            "short",
            [("sum by (kind) (rate(desktrace_stream_sessions_published_total[5m])) * 60", "{{kind}}")],
        ),
    ],
    [
        (
            "Corrections, retractions and re-sent records per minute",
            "short",
            [
                ("sum(rate(desktrace_stream_corrections_total[5m])) * 60", "corrections"),
                ("sum(rate(desktrace_stream_retractions_total[5m])) * 60", "retractions"),
                ("sum(rate(desktrace_stream_resent_total[5m])) * 60", "re-sent after a restart or rebalance"),
            ],
        ),
        (
            "Session close lag p50 / p95",
            "s",
            [
                (
                    "histogram_quantile(0.5, sum by (le) (rate(desktrace_stream_close_lag_seconds_bucket[10m])))",
                    "p50",
                ),
                (
                    "histogram_quantile(0.95, sum by (le) (rate(desktrace_stream_close_lag_seconds_bucket[10m])))",
                    "p95",
                ),
            ],
        ),
        (
            "Event to session published p50 / p99",
            "s",
            [
                (
                    "histogram_quantile(0.5, sum by (le) (rate(desktrace_stream_publish_latency_seconds_bucket[5m])))",
                    "p50",
                ),
                (
                    "histogram_quantile(0.99, sum by (le) (rate(desktrace_stream_publish_latency_seconds_bucket[5m])))",
                    "p99",
                ),
            ],
        ),
    ],
    [
        ("Late events /min", "short", [("sum(rate(desktrace_stream_late_events_total[5m])) * 60", "late")]),
        (
            "Failed periodic task runs /h (each runs again at its next interval)",
            "short",
            [("sum by (task) (increase(desktrace_stream_task_failures_total[1h]))", "{{task}}")],
        ),
    ],
]


def dashboard(uid: str, title: str, rows: list[list[Panel]]) -> dict[str, Any]:
    """A Grafana dashboard (schema 39) of timeseries panels, three per row."""
    panels: list[dict[str, Any]] = []
    pid = 1
    for y, row in enumerate(rows):
        width = 24 // len(row)
        for x, (ptitle, unit, exprs) in enumerate(row):
            panels.append(
                {
                    "id": pid,
                    "type": "timeseries",
                    "title": ptitle,
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "gridPos": {"h": 8, "w": width, "x": x * width, "y": y * 8},
                    "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                    "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                    "targets": [
                        {
                            "refId": chr(ord("A") + i),
                            "expr": expr,
                            "legendFormat": legend,
                            "datasource": {"type": "prometheus", "uid": "${datasource}"},
                        }
                        for i, (expr, legend) in enumerate(exprs)
                    ],
                }
            )
            pid += 1
    return {
        "uid": uid,
        "title": title,
        "tags": ["desktrace"],
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Data source",
                    "current": {"text": "Prometheus", "value": "prometheus"},
                }
            ]
        },
        "panels": panels,
    }


def outputs() -> dict[Path, str]:
    """Every generated file and its content."""
    out = {
        DASHBOARDS / "pipeline.json": dashboard("desktrace-pipeline", "desktrace / pipeline", PIPELINE),
        DASHBOARDS / "fleet.json": dashboard("desktrace-fleet", "desktrace / fleet", FLEET),
        DASHBOARDS / "sessions.json": dashboard("desktrace-sessions", "desktrace / sessions", SESSIONS),
    }
    texts = {p: json.dumps(d, indent=2) + "\n" for p, d in out.items()}
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    prometheus_rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "desktrace", "labels": {"role": "alert-rules"}},
        "spec": rules,
    }
    texts[PROMETHEUS_RULE] = (
        "# Generated by deploy/generate.py from deploy/prometheus/rules/desktrace.rules.yml: do not edit.\n"
        + yaml.safe_dump(prometheus_rule, sort_keys=False, width=120)
    )
    return texts


def expressions() -> list[str]:
    """Every PromQL expression of the dashboards and the alert rules."""
    exprs = [e for rows in (PIPELINE, FLEET, SESSIONS) for row in rows for _, _, es in row for e, _ in es]
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    return exprs


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(DEPLOY.parent))  # run as a script: the repo's packages
    from common.generated import generated_files_main

    return generated_files_main("python deploy/generate.py", __doc__, outputs, argv)


if __name__ == "__main__":
    raise SystemExit(main())
