"""The rollout guard (docs/flags.md "Guarded rollout"): the rollout guide's rollback triggers, read from
metrics, decide whether a flag's kill switch trips and whether its stage may advance.

Triggers (the guide's "Rollback triggers", thresholds and windows in ``FLAGS["GUARD"]``):

- download error rate above 5 % (``erp_hub:blob_download:error_rate``),
- P95 download latency above 10 s for 5 minutes (``erp_hub:blob_download:latency_p95``),
- KMS success rate below 90 % (``erp_hub:kms:success_rate``).

Two sources. With ``PROMETHEUS_URL``: Prometheus's HTTP API (``/api/v1/query``) on the recording rules of
deploy/prometheus/recording-rules.yml, a condition "for N seconds" as ``min_over_time`` (a maximum must be
exceeded by every sample of the window) or ``max_over_time`` (a minimum). Without it: the app's own
prometheus_client multiprocess files (what ``/metrics`` sums), read twice ``LOCAL_SAMPLE_SECONDS`` apart,
the ratios computed from the counters' increase in between — a rate over that interval, not since start
(totals since start would dilute a new failure in hours of healthy history). Its limitation: only the
workers of this machine, and latency is the P95 over the sampled interval only (not "for 5 minutes").

A source that cannot answer raises ``MetricsUnavailable``: the guard then does not trip (exit 2), unless
``FAIL_CLOSED``. Clock and sleep are injectable (module attributes ``clock``, ``sleep``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import requests
from django.utils import timezone
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from core.actors import Actor

from .conf import flag_setting
from .exceptions import FlagConflict, FlagError, MetricsUnavailable
from .metrics import GUARD_RUNS
from .models import Flag
from .services import flag_retirement, flag_set_stage, flag_stage_index, flag_trip_kill_switch
from .stages import STAGES, next_stage

ACTOR = Actor.system("rollout-guard")

# Injectable for tests: "now" for hold times, and the wait between two local samples.
clock: Callable[[], datetime] = timezone.now
sleep: Callable[[float], None] = time.sleep

HEALTHY, TRIPPED, ADVANCED, UNAVAILABLE = "healthy", "tripped", "advanced", "unavailable"
#: Exit status of ``manage.py rollout_guard`` per result (a CronJob's failed Job is the alert).
EXIT_CODES = {HEALTHY: 0, ADVANCED: 0, TRIPPED: 1, UNAVAILABLE: 2}


@dataclass(frozen=True)
class Trigger:
    key: str
    label: str
    record: str
    #: "max": fires above the threshold; "min": fires below it.
    kind: str
    threshold_setting: str
    for_setting: str
    #: Whether "no sample" is a normal answer (no download finished: no latency), not a broken source.
    may_be_empty: bool = False
    percent: bool = True


TRIGGERS: tuple[Trigger, ...] = (
    Trigger(
        "error_rate", "download error rate", "erp_hub:blob_download:error_rate", "max",
        "ERROR_RATE_MAX", "ERROR_RATE_FOR_SECONDS",
    ),
    Trigger(
        "latency_p95", "P95 download latency", "erp_hub:blob_download:latency_p95", "max",
        "LATENCY_P95_MAX_SECONDS", "LATENCY_P95_FOR_SECONDS", may_be_empty=True, percent=False,
    ),
    Trigger(
        "kms_success_rate", "KMS success rate", "erp_hub:kms:success_rate", "min",
        "KMS_SUCCESS_MIN", "KMS_SUCCESS_FOR_SECONDS",
    ),
)  # fmt: skip


@dataclass(frozen=True)
class Check:
    """One trigger as read: its value (None: no sample, e.g. no download finished), and whether it fired."""

    trigger: Trigger
    value: float | None
    threshold: float
    for_seconds: float
    query: str

    @property
    def fired(self) -> bool:
        if self.value is None:
            return False
        if self.trigger.kind == "max":
            return self.value > self.threshold
        return self.value < self.threshold

    def describe(self) -> str:
        t = self.trigger
        op = ">" if t.kind == "max" else "<"
        window = f" for {self.for_seconds:g} s" if self.for_seconds else ""
        limit = f"{op} {_format(t, self.threshold)}{window}"
        if self.value is None:
            return f"{t.label} n/a (no sample; trips when {limit})"
        return f"{t.label} {_format(t, self.value)} ({'FIRED' if self.fired else 'ok'}: trips when {limit})"

    def as_data(self) -> dict[str, Any]:
        return {
            "trigger": self.trigger.key,
            "value": self.value,
            "threshold": self.threshold,
            "for_seconds": self.for_seconds,
            "query": self.query,
            "fired": self.fired,
        }


def _format(trigger: Trigger, value: float) -> str:
    return f"{value * 100:.2f} %" if trigger.percent else f"{value:.3f} s"


@dataclass(frozen=True)
class Reading:
    source: str
    checks: tuple[Check, ...]

    @property
    def fired(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if check.fired)

    def as_data(self) -> dict[str, Any]:
        return {"source": self.source, "checks": [check.as_data() for check in self.checks]}

    def describe(self) -> str:
        return "; ".join(check.describe() for check in self.checks)


class Source(Protocol):
    def read(self, config: Mapping[str, Any]) -> Reading: ...

    def read_hold(self, config: Mapping[str, Any], seconds: float) -> Reading | None:
        """The triggers over the last ``seconds`` (a stage's hold), worst value of each; None: not
        supported by this source."""
        ...


def _limits(trigger: Trigger, config: Mapping[str, Any]) -> tuple[float, float]:
    return float(config[trigger.threshold_setting]), float(config[trigger.for_setting])


# --- Prometheus ------------------------------------------------------------------------------------------


class PrometheusSource:
    """Instant queries on the recording rules through Prometheus's HTTP API (``GET /api/v1/query``)."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query_for(self, trigger: Trigger, for_seconds: float) -> str:
        if not for_seconds:
            return trigger.record
        # "Above the maximum for N s": even the window's smallest sample is above it (and vice versa).
        function = "min_over_time" if trigger.kind == "max" else "max_over_time"
        return f"{function}({trigger.record}[{int(for_seconds)}s])"

    def query(self, expr: str) -> list[float]:
        where = f"Prometheus at {self.url}"
        try:
            response = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise MetricsUnavailable(source=where, reason=f"{type(exc).__name__}: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            raise MetricsUnavailable(
                source=where,
                reason=f"query {expr!r} answered HTTP {response.status_code}: {error or 'no JSON'}",
            )
        data = body.get("data") or {}
        if data.get("resultType") not in ("vector", "scalar"):
            kind = data.get("resultType")
            raise MetricsUnavailable(source=where, reason=f"query {expr!r}: unexpected result type {kind}")
        result: Any = data.get("result")
        try:
            samples: list[Any] = [result] if data["resultType"] == "scalar" else [i["value"] for i in result]
            values = [float(sample[1]) for sample in samples]
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            raise MetricsUnavailable(source=where, reason=f"query {expr!r}: malformed sample") from exc
        return [value for value in values if not math.isnan(value)]

    def hold_query_for(self, trigger: Trigger, for_seconds: float, hold_seconds: float) -> str:
        # The worst value the trigger's own query took at any moment of the hold (a subquery, one step a
        # minute, when the trigger has a window of its own).
        worst = "max_over_time" if trigger.kind == "max" else "min_over_time"
        if not for_seconds:
            return f"{worst}({trigger.record}[{int(hold_seconds)}s])"
        return f"{worst}({self.query_for(trigger, for_seconds)}[{int(hold_seconds)}s:1m])"

    def read(self, config: Mapping[str, Any]) -> Reading:
        return self._read(config, None)

    def read_hold(self, config: Mapping[str, Any], seconds: float) -> Reading:
        return self._read(config, seconds)

    def _read(self, config: Mapping[str, Any], hold_seconds: float | None) -> Reading:
        checks = []
        for trigger in TRIGGERS:
            threshold, for_seconds = _limits(trigger, config)
            if hold_seconds is None:
                expr = self.query_for(trigger, for_seconds)
            else:
                expr = self.hold_query_for(trigger, for_seconds, hold_seconds)
            values = self.query(expr)
            if not values and not trigger.may_be_empty:
                # The ratio rules answer even when idle (recording-rules.yml): no sample means they are not
                # loaded or not evaluated, and a guard that reads nothing must not report healthy.
                raise MetricsUnavailable(
                    source=f"Prometheus at {self.url}",
                    reason=f"no sample for {expr!r} (are deploy/prometheus/recording-rules.yml loaded?)",
                )
            # Several series (several jobs): the worst one decides.
            value = (max(values) if trigger.kind == "max" else min(values)) if values else None
            checks.append(Check(trigger, value, threshold, for_seconds, expr))
        return Reading(f"prometheus {self.url}", tuple(checks))


# --- the app's own multiprocess metrics --------------------------------------------------------------------


@dataclass
class _Totals:
    downloads: float = 0.0
    download_errors: float = 0.0
    kms_calls: float = 0.0
    kms_successes: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)


class MultiprocessSource:
    """The gunicorn workers' prometheus_client files (``PROMETHEUS_MULTIPROC_DIR``), summed as ``/metrics``
    sums them, sampled twice ``interval`` seconds apart: the rates are the counters' increase in between."""

    def __init__(self, path: str, *, interval: float) -> None:
        self.path = path
        self.interval = interval

    def totals(self) -> _Totals:
        registry = CollectorRegistry()
        try:
            collector = MultiProcessCollector(registry, path=self.path)
            metrics = list(collector.collect())
        except (OSError, ValueError) as exc:
            raise MetricsUnavailable(source=f"multiprocess metrics in {self.path}", reason=str(exc)) from exc
        totals = _Totals()
        for metric in metrics:
            for sample in metric.samples:
                if sample.name == "file_downloads_total":
                    totals.downloads += sample.value
                    if sample.labels.get("status") == "error":
                        totals.download_errors += sample.value
                elif sample.name == "kms_calls_total":
                    totals.kms_calls += sample.value
                    if sample.labels.get("status") == "success":
                        totals.kms_successes += sample.value
                elif sample.name == "file_download_duration_seconds_bucket":
                    bound = float(sample.labels["le"])
                    totals.buckets[bound] = totals.buckets.get(bound, 0.0) + sample.value
        return totals

    def read(self, config: Mapping[str, Any]) -> Reading:
        first = self.totals()
        sleep(self.interval)
        second = self.totals()
        downloads = second.downloads - first.downloads
        kms_calls = second.kms_calls - first.kms_calls
        if downloads < 0 or kms_calls < 0:
            raise MetricsUnavailable(
                source=f"multiprocess metrics in {self.path}",
                reason="counters went down between the samples (the server restarted); run again",
            )
        successes = second.kms_successes - first.kms_successes
        values = {
            # Idle reads as healthy, as in the recording rules: error rate 0, KMS success rate 1.
            "error_rate": (second.download_errors - first.download_errors) / downloads if downloads else 0.0,
            "latency_p95": histogram_quantile(
                0.95, {le: second.buckets.get(le, 0.0) - first.buckets.get(le, 0.0) for le in second.buckets}
            ),
            "kms_success_rate": successes / kms_calls if kms_calls else 1.0,
        }
        window = f"increase over {self.interval:g} s"
        checks = []
        for trigger in TRIGGERS:
            threshold, _ = _limits(trigger, config)
            # The sampled interval is the window here, whatever *_FOR_SECONDS says (module docstring).
            checks.append(Check(trigger, values[trigger.key], threshold, 0, f"{trigger.record} ({window})"))
        return Reading(f"multiprocess {self.path}", tuple(checks))

    def read_hold(self, config: Mapping[str, Any], seconds: float) -> None:
        return None  # no history here: the hold is judged by "no trip since the last change" alone


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus's ``histogram_quantile`` on cumulative bucket counts (``le`` → count): linear within the
    bucket holding the rank; the highest finite bound when it falls into ``+Inf``; None without counts."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for index, (bound, count) in enumerate(ordered):
        if count >= rank:
            if math.isinf(bound):
                return ordered[index - 1][0] if index > 0 else None
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return ordered[-1][0]


def guard_source() -> Source:
    """Prometheus when ``PROMETHEUS_URL`` is set, else the multiprocess directory; neither: unavailable."""
    config = flag_setting("GUARD")
    if config["PROMETHEUS_URL"]:
        return PrometheusSource(config["PROMETHEUS_URL"], timeout=float(config["TIMEOUT_SECONDS"]))
    if config["MULTIPROC_DIR"]:
        return MultiprocessSource(config["MULTIPROC_DIR"], interval=float(config["LOCAL_SAMPLE_SECONDS"]))
    raise MetricsUnavailable(
        source="no metrics source",
        reason="set PROMETHEUS_URL (or PROMETHEUS_MULTIPROC_DIR on the machine the workers run on)",
    )


# --- the decision -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    result: str
    lines: tuple[str, ...]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.result]


def flag_guard(
    *, name: str, advance: bool = False, fail_closed: bool | None = None, source: Source | None = None
) -> Outcome:
    """Read the triggers for flag ``name``; trip its kill switch when one fires (or, ``fail_closed``, when
    they cannot be read); with ``advance``, move a healthy flag that held its stage long enough one stage on.
    Every change goes through ``flags.services`` as ``system:rollout-guard``, with the values in the audit."""
    config = flag_setting("GUARD")
    if fail_closed is None:
        fail_closed = bool(config["FAIL_CLOSED"])
    flag = Flag.objects.get(name=name)
    if flag.retired:
        return _count(Outcome(HEALTHY, (f"{name}: retired, nothing to guard.",)))
    try:
        source = source or guard_source()
        reading = source.read(config)
    except MetricsUnavailable as exc:
        if not fail_closed:
            return _count(Outcome(UNAVAILABLE, (f"{name}: not guarded, metrics unavailable: {exc.detail}",)))
        flag_trip_kill_switch(
            name=name,
            actor=ACTOR,
            reason=f"rollout_guard (fail-closed): metrics unavailable: {exc.detail}",
            details={"fail_closed": True, "source": exc.source, "error": exc.reason},
        )
        line = f"{name}: kill switch tripped (fail-closed), metrics unavailable: {exc.detail}"
        return _count(Outcome(TRIPPED, (line,)))
    fired = reading.fired
    if fired:
        what = "; ".join(check.describe() + f" [query {check.query}]" for check in fired)
        # Idempotent: a switch already on records nothing new; the run still fails while the trigger holds.
        state = "kill switch already on" if flag.kill_switch else "kill switch tripped"
        flag_trip_kill_switch(
            name=name, actor=ACTOR, reason=f"rollout_guard: {what}", details=reading.as_data()
        )
        return _count(Outcome(TRIPPED, (f"{name}: {state} ({reading.source}): {what}",)))
    lines = [f"{name}: healthy ({reading.source}): {reading.describe()}"]
    result = HEALTHY
    if advance:
        advanced, line = _advance(flag, reading, source, config)
        lines.append(line)
        result = ADVANCED if advanced else HEALTHY
    else:
        status = flag_retirement(flag, now=clock())
        if status.eligible:
            lines.append(f"{name}: {status.detail} (admin → Retire…; the guard never retires by itself)")
    return _count(Outcome(result, tuple(lines)))


def _advance(
    flag: Flag, reading: Reading, source: Source, config: Mapping[str, Any]
) -> tuple[bool, str]:
    now = clock()
    name = flag.name
    if flag.kill_switch:
        return False, f"{name}: kill switch is on; not advancing."
    index = flag_stage_index(flag)
    if index < 0:
        return False, f"{name}: the flag is off; not advancing."
    stage = STAGES[index]
    following = next_stage(index)
    if following is None:
        status = flag_retirement(flag, now=now)
        if status.eligible:
            return False, f"{name}: at 100 % — {status.detail} Retire it in the admin (never done here)."
        return False, f"{name}: at 100 %, the last stage. {status.detail}"
    hold = timedelta(hours=flag_setting("STAGE_HOLD_HOURS")[stage.key])
    if flag.changed_at is None:
        return False, f"{name}: no change time recorded; cannot tell how long {stage.label} has held."
    due = flag.changed_at + hold
    if now < due:
        left = due - now
        return False, (
            f"{name}: {stage.label} since {flag.changed_at:%Y-%m-%d %H:%M} UTC, holds {_hours(hold)} h; "
            f"{following.label} from {due:%Y-%m-%d %H:%M} UTC ({_hours(left)} h left)."
        )
    # Healthy for the whole hold, not only now: where the source keeps history (Prometheus), no trigger
    # may have held at any moment of the last hold time, even one the guard did not see (not running).
    try:
        during = source.read_hold(config, hold.total_seconds()) if hold else None
    except MetricsUnavailable as exc:
        return False, f"{name}: not advanced: cannot read the metrics of the hold: {exc.detail}"
    if during is not None and during.fired:
        what = "; ".join(check.describe() + f" [query {check.query}]" for check in during.fired)
        return False, f"{name}: not advanced: a trigger held during {stage.label}'s hold: {what}"
    reason = (
        f"rollout_guard: {stage.label} held {_hours(now - flag.changed_at)} h (hold {_hours(hold)} h) "
        f"without a trigger; {reading.describe()}"
    )
    try:
        flag_set_stage(
            name=name,
            stage=following.key,
            expected_version=flag.version,  # an operator's change meanwhile wins; the next run decides again
            actor=ACTOR,
            reason=reason,
            details={
                **reading.as_data(),
                "hold": during.as_data() if during is not None else None,
                "from_stage": stage.key,
                "held_hours": _hours(now - flag.changed_at),
            },
        )
    except FlagConflict as exc:
        return False, f"{name}: not advanced: {exc.detail}"
    except FlagError as exc:  # a refused stage move (a skip) is reported, never forced
        return False, f"{name}: not advanced: {exc.detail}"
    return True, f"{name}: advanced {stage.label} → {following.label}."


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f}"


def _count(outcome: Outcome) -> Outcome:
    GUARD_RUNS.labels(result=outcome.result).inc()
    return outcome
