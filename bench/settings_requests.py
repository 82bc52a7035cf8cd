"""Bench-only settings of bench/bench_requests.py: the product's settings with bench/requestserve.py's URLconf
(the product's URLs plus a plaintext range view), and the audit group commit switchable for before/after."""

from __future__ import annotations

import os

from erphub.settings import *  # noqa: F403 — everything the product configures, then the overrides below

ROOT_URLCONF = "bench.requestserve"
BENCH_PLAIN_FILE = os.environ.get("ERPHUB_BENCH_PLAIN_FILE", "")
AUDIT = {**AUDIT, "GROUP_COMMIT": os.environ.get("ERPHUB_BENCH_GROUP_COMMIT", "1") == "1"}  # noqa: F405
