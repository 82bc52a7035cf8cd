"""Prometheus metrics of the kms app (DESIGN §9). Names follow the seed's dashboards and alerts."""

from __future__ import annotations

from prometheus_client import Counter

# Data-key cache (kms.cache): a hit served a download's data key without a KMS call; a miss made one
# unwrap (concurrent misses for the same key count one miss and, for the requests that waited, hits).
DEK_CACHE_HITS = Counter("dek_cache_hits_total", "Data keys served from the in-process cache.")
DEK_CACHE_MISSES = Counter("dek_cache_misses_total", "Data keys the cache had to unwrap through the KMS.")
