"""``manage.py rollout_guard``: the rollout guide's rollback triggers, automated (flags.guard).

Exit status: 0 healthy (or advanced), 1 the kill switch tripped (or a trigger fired on an already tripped
switch), 2 the metrics could not be read and nothing was changed. Healthy runs print the values on stdout;
a trip or a failure is one log line (stderr; JSON in production).
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import CommandError, CommandParser

from core.terminal import OperatorCommand
from flags.guard import HEALTHY, TRIPPED, UNAVAILABLE, flag_guard
from flags.models import SECURE_BLOB_STREAMING, Flag

logger = logging.getLogger("flags.guard")


class Command(OperatorCommand):
    help = (
        "Read the rollback triggers (download error rate, P95 latency, KMS success rate) from Prometheus "
        "(PROMETHEUS_URL) or the workers' own metrics; trip the flag's kill switch when one fires. "
        "--advance: move a healthy flag one stage on once its stage has held."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--flag", default=SECURE_BLOB_STREAMING, help="the flag to guard")
        parser.add_argument(
            "--advance",
            action="store_true",
            help="move to the next stage when the current one has been healthy for its hold time",
        )
        parser.add_argument(
            "--fail-closed",
            action="store_true",
            default=None,
            help="trip the kill switch also when the metrics cannot be read (FLAGS['GUARD']['FAIL_CLOSED'])",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            outcome = flag_guard(
                name=options["flag"], advance=options["advance"], fail_closed=options["fail_closed"]
            )
        except Flag.DoesNotExist:
            raise CommandError(f"No flag named {options['flag']!r}.") from None
        if outcome.result in (TRIPPED, UNAVAILABLE):
            logger.error("rollout_guard: %s", " ".join(outcome.lines))
            raise SystemExit(outcome.exit_code)
        for line in outcome.lines:
            self.stdout.write(line)
        if outcome.result != HEALTHY:
            logger.info("rollout_guard: %s", " ".join(outcome.lines))
