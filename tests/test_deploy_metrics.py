"""The Grafana dashboard and the Prometheus alert rules in deploy/ use only series vimark exports.

The rules file is YAML written in its JSON subset, so it is read here with the json module (PyYAML
is not a dependency of the project; where it is installed, it must read the same document). Every
`vimark_*` name in a query, in the rules and in docs/operations.md, must be a metric family that a
fresh `Metrics()` serves on its endpoint, or a histogram's `_bucket`/`_sum`/`_count` series.
PromQL is not parsed here, only checked for balanced brackets; `promtool check rules` runs when
promtool is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vimark.server.metrics import Metrics, serve_metrics
from vimark.v1 import mark_service_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "vimark-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "vimark-alerts.yml"
OPERATIONS = ROOT / "docs" / "operations.md"

NAME = re.compile(r"\bvimark_[a-z_]+\b")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def exposed_families() -> dict[str, str]:
    """Family name -> type, as the metrics endpoint of a fresh server's registry serves them."""
    metrics = Metrics()
    metrics.rpc_finished("Verify", "OK", 0.002)
    metrics.verdict_given("Verify", pb.VERDICT_VALID)
    metrics.rate_limited.labels("police").inc()
    metrics.batch_size.observe(10)
    metrics.signature_batch_size.observe(4)
    metrics.audit_written.inc()
    metrics.audit_dropped.inc()
    server, port = serve_metrics("127.0.0.1", 0, metrics.registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.stop()
    families = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            families[name] = kind
    return families


FAMILIES = exposed_families()


def family_of(name: str) -> str | None:
    """The served family a series name belongs to: itself, or the histogram of its `_bucket`,
    `_sum` or `_count` series; None when vimark serves no such series."""
    if name in FAMILIES:
        return name
    for suffix in HISTOGRAM_SERIES:
        if name.endswith(suffix) and FAMILIES.get(name[: -len(suffix)]) == "histogram":
            return name[: -len(suffix)]
    return None


def unknown_names(text: str) -> set[str]:
    """The vimark_ names in `text` that are neither a served family nor a histogram's series."""
    return {name for name in NAME.findall(text) if family_of(name) is None}


def balanced(expr: str) -> bool:
    """Brackets balance and nest outside string literals ('…', "…", `…`)."""
    closing = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    quote = ""
    escaped = False
    for char in expr:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\" and quote != "`":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "'\"`":
            quote = char
        elif char in "([{":
            stack.append(char)
        elif char in closing:
            if not stack or stack.pop() != closing[char]:
                return False
    return not stack and not quote


def read_rules() -> dict[str, Any]:
    text = ALERTS.read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    document: dict[str, Any] = json.loads(body)
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:  # the file must be the same document to a YAML reader (which is what Prometheus is)
        assert yaml.safe_load(text) == document
    return document


def rules() -> Iterator[dict[str, Any]]:
    for group in read_rules()["groups"]:
        yield from group["rules"]


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))  # a collapsed row holds its panels


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = [t["expr"] for p in dashboard_panels(dashboard["panels"]) for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def test_the_registry_serves_what_the_checks_expect() -> None:
    assert FAMILIES["vimark_rpc_seconds"] == "histogram"
    assert FAMILIES["vimark_verdicts_total"] == "counter"
    assert FAMILIES["vimark_index_sync_age_seconds"] == "gauge"
    assert not [name for name in FAMILIES if name.endswith("_created")]
    assert unknown_names("vimark_rpc_seconds_bucket vimark_audit_backlog") == set()
    assert unknown_names("vimark_verdicts vimark_index_vehicles_count vimark_nonexistent") == {
        "vimark_verdicts",
        "vimark_index_vehicles_count",
        "vimark_nonexistent",
    }
    assert balanced("sum(rate(x{a=')'}[5m]))") and not balanced("sum(rate(x[5m])") and not balanced("(]")


def test_dashboard_queries_use_exported_metrics() -> None:
    queries = dashboard_queries()
    assert len(queries) > 20
    covered = set()
    for query in queries:
        assert balanced(query), query
        assert unknown_names(query) == set(), query
        covered |= {family_of(name) for name in NAME.findall(query)}
    assert set(FAMILIES) - covered == set(), "every family vimark exports is on the dashboard"


def test_dashboard_is_a_well_formed_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    panels = list(dashboard_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"} <= variables, target["expr"]
    assert "datasource" in variables


def test_alert_rules_use_exported_metrics_and_have_summaries() -> None:
    names = []
    for rule in rules():
        assert "record" in rule or "alert" in rule, rule
        expr = rule["expr"]
        assert balanced(expr), expr
        assert unknown_names(expr) == set(), expr
        if "alert" not in rule:
            continue
        names.append(rule["alert"])
        assert rule["annotations"].get("summary"), rule["alert"]
        assert rule["labels"].get("severity") in {"critical", "warning", "info"}, rule["alert"]
        assert "for" not in rule or DURATION.match(rule["for"]), rule["alert"]
        assert unknown_names(" ".join(rule["annotations"].values())) == set(), rule["alert"]
    assert len(names) == len(set(names)), "alert names must be unique"
    assert len(names) >= 10


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown document."""
    found = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", title)))
    return found


def test_alert_runbooks_point_at_sections_of_the_operations_guide() -> None:
    sections = anchors(OPERATIONS.read_text(encoding="utf-8"))
    for rule in rules():
        if "alert" in rule:
            path, _, anchor = rule["annotations"]["runbook"].partition("#")
            assert path == "docs/operations.md" and anchor in sections, (rule["alert"], anchor)


def test_the_operations_guide_names_only_exported_metrics() -> None:
    assert unknown_names(OPERATIONS.read_text(encoding="utf-8")) == set()


def test_the_guides_main_scrape_job_collects_every_family_but_the_checksum() -> None:
    """The guide's `vimark` job lists the series it collects (`name[]`), leaving out the costly
    index checksum: a family added to Metrics must be added there too."""
    guide = OPERATIONS.read_text(encoding="utf-8")
    job = re.search(r'- job_name: vimark\n.*?"name\[\]": \[(.*?)\]', guide, re.S)
    assert job is not None
    listed = [name.strip() for name in job.group(1).split(",")]
    assert unknown_names(" ".join(listed)) == set()
    assert {family_of(name) for name in listed} == set(FAMILIES) - {"vimark_index_checksum"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None
    result = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
