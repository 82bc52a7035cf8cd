"""Flag metrics (docs/architecture.md §9), defined once per process at import.

``flag_evaluations_total{flag,result}``: one per evaluated request (memoized answers are not counted again).
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
