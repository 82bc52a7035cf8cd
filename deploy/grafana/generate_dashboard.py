"""Generates the "ERP Hub - Secure Blob Streaming" Grafana dashboard (the rollout guide's panels).

Built with grafana-foundation-sdk (Grafana's own typed builders) rather than edited by hand. The guide's
`graph` and `singlestat` panels were removed from Grafana (8+): its graphs are `timeseries` panels here and
its KMS singlestat is a `stat` panel. Every panel reads the datasource chosen in the `datasource` variable.

    python deploy/grafana/generate_dashboard.py           # rewrite dashboards/erp-hub-blob-streaming.json
    python deploy/grafana/generate_dashboard.py --check   # exit 1 if the committed file differs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    FieldColorModeId,
    Threshold,
    ThresholdsMode,
    VariableOption,
)

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "erp-hub-blob-streaming.json"
UID = "erp-hub-blob-streaming"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")


def _thresholds(*steps: tuple[float | None, str]) -> dashboard_builders.ThresholdsConfig:
    """Absolute thresholds; the first step (value None) is the base colour below the first threshold."""
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def _query(expr: str, legend: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id("A").datasource(DATASOURCE)


def _timeseries(title: str, description: str, expr: str, legend: str, unit: str) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(_query(expr, legend))
        .unit(unit)
        .height(8)
        .span(12)
        .line_width(1)
        .fill_opacity(10)
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
    )


def build() -> dict[str, object]:
    builder = (
        dashboard_builders.Dashboard("ERP Hub - Secure Blob Streaming")
        .uid(UID)
        .description("Downloads, throughput, errors, latency and KMS health of Secure Blob Streaming.")
        .tags(["erp-hub", "blob-streaming"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("utc")
        .with_variable(
            dashboard_builders.DatasourceVariable("datasource")
            .label("Data source")
            .type("prometheus")
            .current(VariableOption(selected=True, text="Prometheus", value="prometheus"))
        )
        .with_panel(
            # The guide's rate(file_downloads_total[5m]) drew one line per pod and label set; summed by
            # status it reads as the fleet's downloads per second, split into success, error and aborted.
            _timeseries(
                "Blob Downloads (Rate)",
                "Finished downloads per second over all pods, by outcome (success, error, aborted).",
                "sum by (status) (rate(file_downloads_total[5m]))",
                "{{status}}",
                "reqps",
            )
        )
        .with_panel(
            _timeseries(
                "Download Throughput",
                "Bytes sent to clients per second, all pods (erp_hub:blob_download:bytes_per_second).",
                "erp_hub:blob_download:bytes_per_second",
                "throughput",
                "Bps",
            )
        )
        .with_panel(
            _timeseries(
                "Error Rate (%)",
                "Share of finished downloads that failed; 0 when idle. Yellow from 1 %, red from 5 % "
                "(the BlobDownloadErrorRateHigh alert and the rollback trigger).",
                "erp_hub:blob_download:error_rate * 100",
                "error rate",
                "percent",
            )
            .min(0)
            .thresholds(_thresholds((None, "green"), (1, "yellow"), (5, "red")))
            .color_scheme(dashboard_builders.FieldColor().mode(FieldColorModeId.THRESHOLDS))
            .thresholds_style(
                common_builders.GraphThresholdsStyleConfig().mode(
                    common.GraphTresholdsStyleMode.LINE_AND_AREA
                )
            )
        )
        .with_panel(
            _timeseries(
                "P95 Latency",
                "95th percentile of download duration over all pods; no value while no download "
                "finished. Yellow from 2 s, red from 5 s (the alert fires above 10 s for 10 minutes).",
                "erp_hub:blob_download:latency_p95",
                "p95",
                "s",
            )
            .min(0)
            .thresholds(_thresholds((None, "green"), (2, "yellow"), (5, "red")))
            .color_scheme(dashboard_builders.FieldColor().mode(FieldColorModeId.THRESHOLDS))
            .thresholds_style(
                common_builders.GraphThresholdsStyleConfig().mode(
                    common.GraphTresholdsStyleMode.LINE_AND_AREA
                )
            )
        )
        .with_panel(
            # Thresholds 90 and 95: red below 90 % (the rollback trigger), yellow below 95 % (the alert).
            stat.Panel()
            .title("KMS Health")
            .description(
                "Share of KMS attempts that succeeded (retries included); 100 % when idle. Red below 90 % "
                "(rollback trigger), yellow below 95 % (KMSKeyRetrievalFailing), green above."
            )
            .datasource(DATASOURCE)
            .with_target(_query("erp_hub:kms:success_rate * 100", "KMS success rate"))
            .unit("percent")
            .min(0)
            .max(100)
            .decimals(2)
            .height(8)
            .span(12)
            .thresholds(_thresholds((None, "red"), (90, "yellow"), (95, "green")))
            .color_scheme(dashboard_builders.FieldColor().mode(FieldColorModeId.THRESHOLDS))
            .color_mode(common.BigValueColorMode.BACKGROUND)
            .graph_mode(common.BigValueGraphMode.AREA)
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        )
    )
    encoded: dict[str, object] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return encoded


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed file, write nothing")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python deploy/grafana/generate_dashboard.py", file=sys.stderr)
            return 1
        print(f"{OUTPUT.name}: up to date")
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
