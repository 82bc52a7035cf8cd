"""Shared-cache benchmark: what the default cache's operations cost per backend (core/cache.py).

    .venv/bin/python bench/bench_cache.py            # about half a minute
    .venv/bin/python bench/bench_cache.py --quick    # a few seconds

Backends, each fresh: Django's LocMem (per process: what `make run` used before), ``LockedFileCache`` in a
temporary directory (no Redis), ``ResilientRedisCache`` against a private redis-server on a free loopback port
(no persistence), and the same with that server stopped (every call answered by the process-local fallback
while the circuit is open). Operations: a ``get`` (the flags' stamp), a login attempt (``add`` + ``incr``),
an upload-throttle step (``update`` of a 120-entry history; LocMem has none: ``get`` + ``set``). Then the file
cache under contention: 4 processes each doing login attempts on one key, total increments per second (and
the count checked: none lost). Prints markdown tables; the machine comes first.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rate(fn, seconds: float) -> float:
    calls = 0
    started = time.perf_counter()
    while True:
        for _ in range(200):
            fn()
        calls += 200
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return calls / elapsed


def micro(per_second: float) -> str:
    return f"{per_second:,.0f}/s ({1e6 / per_second:,.1f} µs)"


CONTENDER = textwrap.dedent(
    """
    import sys, time
    from core.cache import LockedFileCache
    cache = LockedFileCache(sys.argv[1], {})
    start, deadline = float(sys.argv[2]), float(sys.argv[3])
    while time.time() < start:  # every process starts together, after its imports
        time.sleep(0.001)
    done = 0
    while time.time() < deadline:
        cache.add("attempts", 0, 600)
        cache.incr("attempts")
        done += 1
    print(done)
    """
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs (a few seconds)")
    args = parser.parse_args()
    seconds = 0.3 if args.quick else 2.0

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "erphub.settings")
    work = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    os.environ["ERPHUB_VAR_DIR"] = str(work / "var")
    import django

    django.setup()
    from django.core.cache.backends.locmem import LocMemCache

    from core import cache as core_cache
    from core.cache import LockedFileCache, ResilientRedisCache
    from core.tests.redis_server import RedisServer

    print(
        f"Machine: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nproc {os.cpu_count()}, "
        f"python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}"
    )
    redis = RedisServer(work)
    redis.start()
    history = [time.time()] * 120

    def ops(cache) -> dict[str, float]:
        cache.set("stamp", 42, 600)
        n = [0]

        def attempt() -> None:
            cache.add("attempts", 0, 600)
            cache.incr("attempts")

        def throttle() -> None:
            if hasattr(cache, "update"):
                cache.update("history", lambda v: (history, True), 60)
            else:
                cache.get("history")
                cache.set("history", history, 60)

        def get() -> None:
            n[0] += 1
            cache.get("stamp")

        return {
            "get": rate(get, seconds),
            "login attempt": rate(attempt, seconds),
            "upload throttle": rate(throttle, seconds),
        }

    results: dict[str, dict[str, float]] = {}
    try:
        results["LocMem (per process)"] = ops(LocMemCache("bench", {}))
        results["LockedFileCache"] = ops(LockedFileCache(str(work / "cache"), {}))
        live = ResilientRedisCache(
            redis.url, {"OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}}
        )
        results["Redis (loopback)"] = ops(live)
        redis.stop()
        live.get("anything")  # the first error opens the circuit
        results["Redis stopped (fallback)"] = ops(live)
        for pool in live._cache._pools.values():
            pool.disconnect()
        core_cache._availability.clear()

        contention = work / "contended"
        LockedFileCache(str(contention), {}).clear()
        duration = 1.0 if args.quick else 5.0
        start = time.time() + 2.0
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CONTENDER, str(contention), str(start), str(start + duration)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        done = [int(p.communicate(timeout=120)[0]) for p in procs]
        counted = LockedFileCache(str(contention), {}).get("attempts")
    finally:
        redis.stop()

    print("\n| backend | get | login attempt (add + incr) | upload throttle step |")
    print("|---|--:|--:|--:|")
    for name, row in results.items():
        print(
            f"| {name} | {micro(row['get'])} | {micro(row['login attempt'])}"
            f" | {micro(row['upload throttle'])} |"
        )
    print(
        f"\nLockedFileCache, 4 processes incrementing one key for {duration:.0f} s: "
        f"{sum(done):,} increments ({sum(done) / duration:,.0f}/s), counted {counted:,} "
        f"({'none lost' if counted == sum(done) else 'LOST ' + str(sum(done) - counted)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
