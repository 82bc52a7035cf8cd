"""Flag metrics (docs/architecture.md §9), defined once per process at import.

``flag_evaluations_total{flag,result}``: one per evaluated request (memoized answers are not counted again).
``rollout_guard_runs_total{result}``: one per run of the rollout guard.
Label values are bounded: ``flag`` is a flag name from the database (``_unknown`` for a name it does not
hold), ``result`` is ``on`` or ``off`` — never a user id.
"""

from __future__ import annotations

from prometheus_client import Counter

UNKNOWN = "_unknown"

FLAG_EVALUATIONS = Counter(
    "flag_evaluations",  # exposed as flag_evaluations_total
    "Flag evaluations, one per request and flag.",
    ["flag", "result"],
)

#: ``result``: healthy, advanced, tripped or unavailable (flags.guard). In a Kubernetes CronJob the process
#: ends before any scrape, so there the Job's status is the signal; on a machine whose workers share
#: ``PROMETHEUS_MULTIPROC_DIR`` with the command, ``/metrics`` shows it.
GUARD_RUNS = Counter("rollout_guard_runs", "Runs of manage.py rollout_guard, by result.", ["result"])
