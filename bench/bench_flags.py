"""Flag benchmark: evaluations per second (warm, cold, memoized) and the latency the gate adds per request.

    .venv/bin/python bench/bench_flags.py            # about half a minute
    .venv/bin/python bench/bench_flags.py --quick    # a few seconds

In one process, against a fresh SQLite database in a temporary var dir (migrated here, removed afterwards):

- ``decide`` alone: the pure decision order over a snapshot (bucket = one SHA-256).
- warm: ``flag_is_enabled(name, user)`` with the snapshot loaded — no query, no cache call.
- memoized: the same call with a request that already holds the answer (what a second check costs).
- cold: the snapshot is dropped before every call — one stamp query plus the reload of every flag row,
  what each worker pays once per change (and what every call would cost without the snapshot).
- the gate alone: the DRF permission on a fresh request each time (what the API adds per request).
- per request: ``GET /secure/files/{id}/`` through Django's test client with a session, the gate evaluating
  the flag (on for the user), against the same request with the flag retired (a constant: no evaluation)
  and with the flag off for the user (404 from the gate, no view work). The modes alternate request by
  request (the snapshot is swapped in place), so a noisy neighbour hits all three alike.

Prints markdown tables; the machine's limits come first.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rate(fn, seconds: float) -> float:
    """Calls per second of ``fn`` (called in batches of 1000) over about ``seconds``."""
    calls = 0
    started = time.perf_counter()
    while True:
        for _ in range(1000):
            fn()
        calls += 1000
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return calls / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs (a few seconds)")
    args = parser.parse_args()
    seconds = 0.5 if args.quick else 3.0
    rounds = 2 if args.quick else 10
    requests_per_round = 100

    var_dir = Path(tempfile.mkdtemp(prefix="bench-flags-"))
    for name in list(os.environ):
        if name.startswith(("DATABASE_", "REDIS_", "FEATURE_", "FLAG_", "ERPHUB_", "DJANGO_")):
            del os.environ[name]
    os.environ.update(DJANGO_SETTINGS_MODULE="erphub.settings", ERPHUB_VAR_DIR=str(var_dir))
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.test import Client, RequestFactory

        from blobs.services import blob_create
        from core.actors import Actor
        from flags import services
        from flags.bucketing import in_rollout
        from flags.evaluation import decide
        from flags.models import SECURE_BLOB_STREAMING, Flag

        settings.ALLOWED_HOSTS = ["testserver"]
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
        call_command("migrate", verbosity=0)
        password = "bench-password"  # noqa: S105 - a throwaway database
        users = [get_user_model().objects.create_user(f"bench{i}", password=password) for i in range(1000)]
        actor = Actor.system("bench")
        services.flag_update(
            name=SECURE_BLOB_STREAMING,
            expected_version=None,
            changes={"rollout_basis_points": 5_000},
            actor=actor,
            reason="benchmark",
        )
        flag = Flag.objects.get(name=SECURE_BLOB_STREAMING)
        inside = next(u for u in users if in_rollout(flag.salt, u.pk, 5_000))
        outside = next(u for u in users if not in_rollout(flag.salt, u.pk, 5_000))

        # --- evaluations per second -------------------------------------------------------------------
        services.flag_cache_reset()
        services.flag_is_enabled(SECURE_BLOB_STREAMING, inside)
        snapshot = services._snapshots.flags[SECURE_BLOB_STREAMING]
        cycle = iter(range(10**12))

        def pure() -> None:
            decide(snapshot, next(cycle) % 1000 + 1)

        def warm() -> None:
            services.flag_is_enabled(SECURE_BLOB_STREAMING, users[next(cycle) % 1000])

        request = RequestFactory().get("/")
        services.flag_is_enabled(SECURE_BLOB_STREAMING, inside, request=request)

        def memoized() -> None:
            services.flag_is_enabled(SECURE_BLOB_STREAMING, inside, request=request)

        def cold() -> None:
            services.flag_cache_reset()
            services.flag_is_enabled(SECURE_BLOB_STREAMING, users[next(cycle) % 1000])

        figures = {
            "decide (pure, one SHA-256)": rate(pure, seconds),
            "flag_is_enabled, warm": rate(warm, seconds),
            "flag_is_enabled, memoized on the request": rate(memoized, seconds),
            "flag_is_enabled, cold (stamp query + reload)": rate(cold, seconds / 3),
        }

        # --- the gate per request ----------------------------------------------------------------------
        from rest_framework.request import Request

        from flags.gate import FeatureNotAvailable, flag_required

        gate = flag_required(SECURE_BLOB_STREAMING)()
        factory = RequestFactory()

        def gate_once() -> None:
            request = Request(factory.get("/secure/files/"))
            request.user = users[next(cycle) % 1000]
            with contextlib.suppress(FeatureNotAvailable):  # users outside the rollout: the 404
                gate.has_permission(request, None)

        figures["gate (DRF permission, fresh request each time)"] = rate(gate_once, seconds)

        # --- latency per request, end to end --------------------------------------------------------------
        blob = blob_create(
            owner=inside, stream=io.BytesIO(b"x" * 1000), filename="b.txt", content_type="text/plain"
        )
        blob_out = blob_create(
            owner=outside, stream=io.BytesIO(b"x"), filename="b.txt", content_type="text/plain"
        )
        client_in, client_out = Client(), Client()
        client_in.force_login(inside)
        client_out.force_login(outside)
        services.flag_cache_reset()
        services.flag_is_enabled(SECURE_BLOB_STREAMING, inside)
        evaluated = services._snapshots.flags[SECURE_BLOB_STREAMING]
        retired = dataclasses.replace(evaluated, retired=True)
        modes = {
            # The same request, the snapshot swapped in place (no reload): the gate evaluates the flag, or
            # the flag is retired (a constant, the baseline), or the user is outside (404 at the gate).
            "evaluated (on)": (evaluated, client_in, f"/secure/files/{blob.pk}/", 200),
            "retired (constant)": (retired, client_in, f"/secure/files/{blob.pk}/", 200),
            "off (404 at the gate)": (evaluated, client_out, f"/secure/files/{blob_out.pk}/", 404),
        }
        samples: dict[str, list[float]] = {name: [] for name in modes}
        for i in range(rounds * requests_per_round + 50):
            order = list(modes) if i % 2 else list(reversed(modes))
            for name in order:
                snapshot, client, path, status = modes[name]
                services._snapshots.flags[SECURE_BLOB_STREAMING] = snapshot
                started = time.perf_counter()
                response = client.get(path)
                elapsed = time.perf_counter() - started
                assert response.status_code == status, (name, response.status_code)
                if i >= 50:  # warm-up
                    samples[name].append(elapsed)

        print("## Machine\n")
        print(
            f"- CPU: {os.cpu_count()} cores ({_cpu_model()}); Python {platform.python_version()}; "
            f"Django {django.get_version()}; SQLite {__import__('sqlite3').sqlite_version}"
        )
        print(f"- load average before: {os.getloadavg()[0]:.2f}\n")
        print("## Evaluations per second (one process, one thread)\n")
        print("| what | per second | per call |\n|---|--:|--:|")
        for name, value in figures.items():
            print(f"| {name} | {value:,.0f} | {1e6 / value:.2f} µs |")
        base = samples["retired (constant)"]
        count = len(base)
        print(f"\n## GET /secure/files/{{id}}/ (session; {count} requests per mode, interleaved)\n")
        print("| gate | median latency | median of paired differences vs retired |\n|---|--:|--:|")
        for name, values in samples.items():
            paired = statistics.median(a - b for a, b in zip(values, base, strict=True))
            print(f"| {name} | {statistics.median(values) * 1e3:.3f} ms | {paired * 1e6:+.1f} µs |")
        return 0
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
