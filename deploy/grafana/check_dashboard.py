"""CI check of the Grafana dashboards in deploy/grafana/dashboards/ (run by .ci/deploy-checks).

- every panel uses a current panel type: removed ones (graph, singlestat, table-old, ...) are refused;
- every panel reads the `datasource` template variable;
- every PromQL expression parses: each one becomes a recording rule in a temporary rule file that
  `promtool check rules` must accept (Grafana's $__rate_interval and friends are substituted first);
- every recorded series a panel reads (`erp_hub:...`) is defined in deploy/prometheus/recording-rules.yml.

Exit status 1 with one line per problem; 0 when all dashboards pass.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DASHBOARDS = HERE / "dashboards"
RECORDING_RULES = HERE.parent / "prometheus" / "recording-rules.yml"

# Panel types Grafana removed or replaced (Grafana 7-11): dashboards using them break or get auto-migrated.
REMOVED_PANEL_TYPES = {
    "graph",
    "singlestat",
    "grafana-singlestat-panel",
    "table-old",
    "grafana-piechart-panel",
    "grafana-worldmap-panel",
    "natel-discrete-panel",
    "flant-statusmap-panel",
}
# Grafana's current core panels.
ALLOWED_PANEL_TYPES = {
    "alertlist",
    "annolist",
    "barchart",
    "bargauge",
    "candlestick",
    "canvas",
    "dashlist",
    "gauge",
    "geomap",
    "heatmap",
    "histogram",
    "logs",
    "news",
    "nodeGraph",
    "piechart",
    "row",
    "stat",
    "state-timeline",
    "status-history",
    "table",
    "text",
    "timeseries",
    "traces",
    "trend",
    "xychart",
}
# Grafana's built-in variables, replaced by something promtool accepts.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${__rate_interval}": "5m",
    "${__interval}": "1m",
    "${__range}": "1h",
}
# Recorded series names (level:metric:operations) contain colons; plain metric names do not.
RECORDED = re.compile(r"\b[a-zA-Z_][a-zA-Z0-9_]*:[a-zA-Z0-9_:]*[a-zA-Z0-9_]")


def panels(items: list[dict[str, object]]) -> Iterator[dict[str, object]]:
    for panel in items:
        yield panel
        nested = panel.get("panels")  # collapsed rows hold their panels
        if isinstance(nested, list):
            yield from panels(nested)


def check(path: Path, recorded: set[str], exprs: list[tuple[str, str]]) -> list[str]:
    problems = []
    dashboard = json.loads(path.read_text())
    templating = dashboard.get("templating", {}).get("list", [])
    variables = {v.get("name") for v in templating if v.get("type") == "datasource"}
    if "datasource" not in variables:
        problems.append(f"{path.name}: no datasource template variable named 'datasource'")
    for panel in panels(dashboard.get("panels", [])):
        title = f"{path.name}: panel {panel.get('title')!r}"
        kind = panel.get("type")
        if kind in REMOVED_PANEL_TYPES:
            problems.append(f"{title}: panel type {kind!r} was removed from Grafana")
        elif kind not in ALLOWED_PANEL_TYPES:
            allowed = ", ".join(sorted(ALLOWED_PANEL_TYPES))
            problems.append(f"{title}: unknown panel type {kind!r} (allowed: {allowed})")
        if kind == "row":
            continue
        if (panel.get("datasource") or {}).get("uid") != "${datasource}":
            problems.append(f"{title}: datasource is not the ${{datasource}} variable")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{title}: no query")
        for target in targets:
            expr = target.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                problems.append(f"{title}: target {target.get('refId')} has no PromQL expression")
                continue
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            exprs.append((title, expr))
            for name in RECORDED.findall(expr):
                if name not in recorded:
                    problems.append(f"{title}: reads {name}, which no recording rule defines")
    return problems


def promtool_parse(exprs: list[tuple[str, str]]) -> list[str]:
    """Every expression as a recording rule; promtool names the ones that do not parse."""
    checks = [{"record": f"panel:expr_{i}:check", "expr": expr} for i, (_, expr) in enumerate(exprs)]
    rules = {"groups": [{"name": "dashboard_panels", "rules": checks}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", prefix="dashboard-exprs-") as handle:
        yaml.safe_dump(rules, handle)
        handle.flush()
        result = subprocess.run(["promtool", "check", "rules", handle.name], capture_output=True, text=True)
    if result.returncode == 0:
        return []
    return [f"promtool rejects a panel query:\n{result.stdout}{result.stderr}"] + [
        f"  expr_{i} = {title}: {e}" for i, (title, e) in enumerate(exprs)
    ]


def main() -> int:
    rules = yaml.safe_load(RECORDING_RULES.read_text())
    recorded = {rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule}
    paths = sorted(DASHBOARDS.glob("*.json"))
    if not paths:
        print(f"no dashboards in {DASHBOARDS}", file=sys.stderr)
        return 1
    problems: list[str] = []
    exprs: list[tuple[str, str]] = []
    for path in paths:
        problems += check(path, recorded, exprs)
    problems += promtool_parse(exprs)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(
        f"{len(paths)} dashboard(s), {len(exprs)} panel queries: "
        "panel types current, PromQL parses, recorded series exist"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
