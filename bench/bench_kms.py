"""KMS calls per download and the data-key cache's effect, in one process (issue 4, "Faults and speed").

    .venv/bin/python bench/bench_kms.py                          # the local provider
    .venv/bin/python bench/bench_kms.py --provider aws           # any KMS_PROVIDERS alias configured by env

Downloads go through the whole Django stack in-process (``django.test.Client``: middleware, session auth,
the stream view, ``blobs.streaming``), against a fresh SQLite database and blob directory under /tmp
(removed at the end). KMS calls are counted at the provider contract (``wrap``/``unwrap``/``rewrap`` of the
provider instance the registry built), so the count is the same for every provider; a cloud provider's
own ``kms_calls_total`` should agree.

1. ``--downloads`` downloads (default 1,000) of ``--blobs`` hot blobs (default 10), round-robin, with the
   data-key cache as configured (``KMS_DEK_CACHE``) and with it off: KMS calls per 1,000 downloads.
2. Latency of one whole download of a ``--latency-size`` blob, cold (cache cleared before each, so it
   unwraps) and warm (cached), ``--reps`` each, interleaved: the median difference is what the KMS call adds.

Prints markdown on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEED_BUDGET_PER_DOWNLOAD = 2  # the seed's design: two KMS calls per download


def log(message: str) -> None:
    print(f"[bench_kms {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def configure(workdir: Path, provider: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "erphub.settings"
    os.environ["ERPHUB_VAR_DIR"] = str(workdir)
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'db.sqlite3'}"
    os.environ["BLOB_STORAGE_DIR"] = str(workdir / "blobs")
    os.environ["KEY_PROVIDER"] = provider
    if provider == "local" and not os.environ.get("BLOB_MASTER_KEYS"):
        os.environ["BLOB_MASTER_KEYS"] = f"mk-bench:{base64.b64encode(secrets.token_bytes(32)).decode()}"
    import django

    django.setup()
    from django.test.utils import setup_test_environment

    setup_test_environment()  # lets django.test.Client through ALLOWED_HOSTS


def count_calls(alias: str) -> tuple[Counter[str], dict[str, Callable[..., Any]]]:
    """Wrap the registry's provider instance so every contract call is counted (and still made).
    Returns the counter and the real (uncounted) methods."""
    from kms.registry import get_provider

    provider = get_provider(alias)
    calls: Counter[str] = Counter()
    real: dict[str, Callable[..., Any]] = {}
    for name in ("wrap", "unwrap", "rewrap"):
        real[name] = getattr(provider, name)

        def counted(*args: Any, _name: str = name, **kwargs: Any) -> Any:
            calls[_name] += 1
            return real[_name](*args, **kwargs)

        setattr(provider, name, counted)
    return calls, real


def download(client: Any, blob_id: object) -> int:
    response = client.get(f"/secure/files/{blob_id}/stream")
    try:
        if response.status_code != 200:
            raise SystemExit(f"download of {blob_id} answered {response.status_code}")
        return sum(len(chunk) for chunk in response.streaming_content)
    finally:
        response.close()


def run_downloads(client: Any, blob_ids: list[object], count: int, calls: Counter[str]) -> dict[str, float]:
    from kms.cache import reset

    reset()  # a fresh process's cache
    before = calls.copy()
    started = time.perf_counter()
    for n in range(count):
        download(client, blob_ids[n % len(blob_ids)])
    elapsed = time.perf_counter() - started
    made = calls - before
    return {"unwraps": made["unwrap"], "all": sum(made.values()), "seconds": elapsed}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--provider", default="local", help="KMS_PROVIDERS alias (default local)")
    parser.add_argument("--downloads", type=int, default=1000)
    parser.add_argument("--blobs", type=int, default=10)
    parser.add_argument("--blob-size", type=int, default=64 * 1024, help="bytes per hot blob")
    parser.add_argument("--latency-size", type=int, default=1024, help="bytes of the latency blob")
    parser.add_argument("--reps", type=int, default=300, help="cold and warm downloads each (default 300)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-kms-"))
    try:
        configure(workdir, args.provider)
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.test import Client, override_settings

        from blobs.services import blob_create
        from kms.cache import dek_cache

        log(f"migrating a fresh database in {workdir}")
        call_command("migrate", verbosity=0)
        owner = get_user_model().objects.create_user("bench", password=secrets.token_urlsafe(16))
        client = Client()
        client.force_login(owner)
        calls, real = count_calls(args.provider)

        log(f"uploading {args.blobs} blobs of {args.blob_size} bytes through provider {args.provider!r}")
        hot = [
            blob_create(owner=owner, stream=io.BytesIO(os.urandom(args.blob_size)), filename=f"h{i}").pk
            for i in range(args.blobs)
        ]
        uploads_wraps = calls["wrap"]

        log(f"{args.downloads} downloads, cache on ({settings.KMS_DEK_CACHE})")
        on = run_downloads(client, hot, args.downloads, calls)
        with override_settings(KMS_DEK_CACHE={"TTL_SECONDS": 0}):
            log(f"{args.downloads} downloads, cache off")
            off = run_downloads(client, hot, args.downloads, calls)

        log(f"latency: {args.reps} cold and {args.reps} warm downloads of {args.latency_size} bytes")
        probe_data = io.BytesIO(os.urandom(args.latency_size))
        probe = blob_create(owner=owner, stream=probe_data, filename="probe").pk
        cache = dek_cache()
        cold: list[float] = []
        warm: list[float] = []
        download(client, probe)  # import and first-request costs out of the way
        for _ in range(args.reps):
            cache.clear()
            started = time.perf_counter()
            download(client, probe)
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            download(client, probe)
            warm.append(time.perf_counter() - started)

        # The KMS call alone, as a cold download makes it (the provider's real unwrap, no counting wrapper).
        from blobs.models import Blob
        from blobs.services import _wrapped_key

        row = Blob.objects.get(pk=probe)
        unwrap_alone: list[float] = []
        for _ in range(args.reps):
            started = time.perf_counter()
            real["unwrap"](_wrapped_key(row), context=row.key_context)
            unwrap_alone.append(time.perf_counter() - started)

        print(f"## KMS calls per download ({args.provider})\n")
        print(
            f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs; "
            f"{args.blobs} hot blobs of {args.blob_size:,} bytes, {args.downloads:,} downloads round-robin "
            f"in one process; the uploads made {uploads_wraps} wraps (one per blob, never cached).\n"
        )
        print("| data-key cache | KMS calls | per 1,000 downloads | per download | seed budget per 1,000 |")
        print("|---|--:|--:|--:|--:|")
        budget = SEED_BUDGET_PER_DOWNLOAD * 1000
        for name, result in (("on (defaults)", on), ("off", off)):
            per_1000 = result["all"] * 1000 / args.downloads
            per_download = result["all"] / args.downloads
            print(f"| {name} | {result['all']} | {per_1000:,.0f} | {per_download:.3f} | {budget:,} |")
        print(
            f"\n## Latency of one download of {args.latency_size:,} bytes "
            f"({args.provider}, {args.reps} each, interleaved)\n"
        )
        print("| | median | p95 |")
        print("|---|--:|--:|")
        for name, values in (("cold (unwraps)", cold), ("warm (cached key)", warm)):
            median, p95 = statistics.median(values) * 1e3, percentile(values, 0.95) * 1e3
            print(f"| {name} | {median:.3f} ms | {p95:.3f} ms |")
        added = statistics.median([c - w for c, w in zip(cold, warm, strict=True)])
        print(f"| cold − warm (median of the paired differences) | {added * 1e3:.3f} ms | |")
        print(
            f"| the unwrap call alone | {statistics.median(unwrap_alone) * 1e3:.3f} ms | "
            f"{percentile(unwrap_alone, 0.95) * 1e3:.3f} ms |"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
