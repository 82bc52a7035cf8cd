"""Bench-only settings: the product with ``blobs.crypto``'s in-place ``bytes`` path switched off, so whole
segments go through ``AESGCM.decrypt`` (a new, zero-filled ``bytes`` per segment). Used only by
``bench/bench_download.py --ab-settings bench.settings_zerofill`` for the side-by-side run of issue 10
item 5; never deployed."""

from __future__ import annotations

import blobs.crypto
from erphub.settings import *  # noqa: F403 — everything the product configures

blobs.crypto._new_bytes = None
