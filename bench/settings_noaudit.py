"""Bench-only settings: the product with downloads NOT audited, for the audit-cost comparison in
bench/bench_audit.py. Never deployed: an unaudited download path exists nowhere in the product."""

from __future__ import annotations

from erphub.settings import *  # noqa: F403 — everything the product configures, then the override below

MIDDLEWARE = ["bench.noaudit.DownloadsUnaudited", *MIDDLEWARE]  # noqa: F405
