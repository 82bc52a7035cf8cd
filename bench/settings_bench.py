"""Bench-only settings: the product's settings with a URLconf of plain-file views (bench/plainserve.py).

Used only by bench/bench_download.py for the plaintext FileResponse baselines; never deployed. The product's
own URLconf (erphub/urls.py) does not include these views.
"""

from __future__ import annotations

import os

from erphub.settings import *  # noqa: F403 — everything the product configures, then the overrides below

ROOT_URLCONF = "bench.plainserve"
# The plaintext file the baselines serve; the bench script sets it for the servers it starts.
BENCH_PLAIN_FILE = os.environ.get("ERPHUB_BENCH_PLAIN_FILE", "")
# django-encrypted-files' copy of it (16-byte nonce + AES-CTR) and its key in hex, both from the bench script.
BENCH_CTR_FILE = os.environ.get("ERPHUB_BENCH_CTR_FILE", "")
BENCH_CTR_KEY = os.environ.get("ERPHUB_BENCH_CTR_KEY", "")
