"""Blob downloads from S3 (moto's server) vs the local filesystem, side by side in one run.

    .venv/bin/python bench/bench_s3.py                      # 64 MiB blob, 9 rounds
    .venv/bin/python bench/bench_s3.py --size-mib 16 --rounds 5

One process, one fresh SQLite database, blob directory and moto S3 server under /tmp (removed at the end).
Two blobs of the same size, one per store ("blobs": the filesystem, "blobs_s3": a bucket on moto's server,
a subprocess started by ``kms.tests.servers.MotoServer`` as the tests start it, reached over loopback HTTP
through boto3's AWS_ENDPOINT_URL_S3 exactly as a deploy configures it). Downloads go through the whole Django
stack in-process (``django.test.Client``: middleware, session auth, the stream view, ``blobs.streaming``).
Stores are interleaved within every round, the order alternating per round.

Measured per store: full-download throughput (MiB/s, the body consumed as fast as Python takes it); time to
the first byte of a 1-byte range (the request until the first body chunk is in hand: size check, key unwrap
from the data-key cache, header read, the one segment); and, for S3, the requests the server logged per full
download and per 1-byte range. moto is a Python server on loopback: not S3's latency or bandwidth.

Prints markdown on stdout (the machine facts first), progress on stderr.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.metadata
import io
import logging
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MiB = 1024 * 1024


def log(message: str) -> None:
    print(f"[bench_s3 {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def configure(workdir: Path, endpoint: str, bucket: str) -> None:
    from blobs.tests.s3 import apply_environment, s3_environment

    os.environ["DJANGO_SETTINGS_MODULE"] = "erphub.settings"
    os.environ["ERPHUB_VAR_DIR"] = str(workdir)
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'db.sqlite3'}"
    os.environ["BLOB_STORAGE_DIR"] = str(workdir / "blobs")
    os.environ["KEY_PROVIDER"] = "local"
    os.environ["BLOB_MASTER_KEYS"] = f"mk-bench:{base64.b64encode(secrets.token_bytes(32)).decode()}"
    os.environ["DJANGO_LOG_LEVEL"] = "WARNING"
    # The settings' own S3 alias, as a deploy sets it: BLOB_S3_BUCKET plus boto3's variables.
    os.environ["BLOB_S3_BUCKET"] = bucket
    apply_environment(s3_environment(endpoint))
    import django

    django.setup()
    from django.test.utils import setup_test_environment

    setup_test_environment()  # lets django.test.Client through ALLOWED_HOSTS
    # The audit trail and the access log write a JSON line per download at INFO: not what is measured here.
    logging.disable(logging.INFO)


def make_blob(owner, alias: str, size: int):  # type: ignore[no-untyped-def]
    from django.conf import settings
    from django.test import override_settings

    from blobs.services import blob_create
    from blobs.tests.factories import pattern

    with override_settings(BLOBS={**settings.BLOBS, "STORAGE_ALIAS": alias}):
        return blob_create(
            owner=owner, stream=io.BytesIO(pattern(size)), filename=f"{alias}.bin", content_type=None
        )


def full_download(client, blob) -> float:  # type: ignore[no-untyped-def]
    from django.urls import reverse

    started = time.perf_counter()
    response = client.get(reverse("blobs:stream", args=[blob.pk]))
    got = 0
    for chunk in response.streaming_content:
        got += len(chunk)
    elapsed = time.perf_counter() - started
    response.close()
    assert got == blob.size, (got, blob.size)
    return elapsed


def first_byte(client, blob) -> float:  # type: ignore[no-untyped-def]
    from django.urls import reverse

    offset = blob.size // 2
    started = time.perf_counter()
    response = client.get(
        reverse("blobs:stream", args=[blob.pk]), headers={"Range": f"bytes={offset}-{offset}"}
    )
    chunks = iter(response.streaming_content)
    first = next(chunks)
    elapsed = time.perf_counter() - started
    assert len(first) == 1
    for _rest in chunks:
        pass
    response.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--ttfb-reps", type=int, default=50, help="1-byte ranges per store per round")
    # moto copies a whole object out of its store for every GET, ranged or not (moto.s3.models FakeKey.value):
    # on the large blob its TTFB is moto's, so it is measured on a small one too.
    parser.add_argument("--small-mib", type=int, default=1, help="size of the second blob for the TTFB")
    args = parser.parse_args()

    from kms.tests.servers import MotoServer

    workdir = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    stack = contextlib.ExitStack()
    try:
        server = MotoServer(workdir)
        stack.callback(server.stop)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        configure(workdir, server.url, bucket)
        run(server, bucket, args)
    finally:
        stack.close()
        shutil.rmtree(workdir, ignore_errors=True)


def run(server, bucket: str, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    import boto3
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client

    from blobs.storage import blob_store
    from blobs.tests.factories import make_user
    from blobs.tests.s3 import REGION

    admin = boto3.client("s3", region_name=REGION, endpoint_url=server.url)
    admin.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    admin.close()
    call_command("migrate", verbosity=0)
    owner = make_user("bench")
    client = Client()
    client.force_login(owner)
    size = args.size_mib * MiB
    log(f"uploading two {args.size_mib} MiB blobs")
    blobs = {alias: make_blob(owner, alias, size) for alias in ("blobs", "blobs_s3")}
    small = {alias: make_blob(owner, alias, args.small_mib * MiB) for alias in ("blobs", "blobs_s3")}
    s3_key = f"/{bucket}/{blob_store('blobs_s3').key(blobs['blobs_s3'].storage_name)}"

    def s3_requests() -> tuple[int, int]:
        server.settled()
        return server.requests("GET", s3_key), server.requests("HEAD", s3_key)

    for blob in blobs.values():  # warm: data key cached, connections open, pages in the page cache
        full_download(client, blob)
        first_byte(client, blob)
    throughput: dict[str, list[float]] = {alias: [] for alias in blobs}
    ttfb: dict[str, list[float]] = {alias: [] for alias in blobs}
    ttfb_small: dict[str, list[float]] = {alias: [] for alias in blobs}
    for round_ in range(args.rounds):
        order = list(blobs) if round_ % 2 == 0 else list(reversed(blobs))
        for alias in order:
            throughput[alias].append(size / MiB / full_download(client, blobs[alias]))
            ttfb[alias].extend(first_byte(client, blobs[alias]) for _ in range(args.ttfb_reps))
            ttfb_small[alias].extend(first_byte(client, small[alias]) for _ in range(args.ttfb_reps))
        log(f"round {round_ + 1}/{args.rounds}")

    before = s3_requests()
    full_download(client, blobs["blobs_s3"])
    after_full = s3_requests()
    first_byte(client, blobs["blobs_s3"])
    after_range = s3_requests()
    segments = blobs["blobs_s3"].params.segment_count(size)

    def p(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) >= 2 else values[0]

    print("| | |\n|---|---|")
    print(f"| date | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} |")
    print(f"| machine | {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()} |")
    print(f"| Python | {platform.python_version()} |")
    versions = ", ".join(f"{n} {importlib.metadata.version(n)}" for n in ("boto3", "moto", "django-storages"))
    print(f"| packages | {versions} |")
    print(
        f"| run | {args.size_mib} MiB blob per store, {args.rounds} rounds, {args.ttfb_reps} 1-byte ranges "
        f"per store per round; segment {settings.BLOBS['SEGMENT_SIZE'] // 1024} KiB, READ_AHEAD_BYTES "
        f"{blob_store('blobs_s3').read_ahead_bytes // 1024} KiB |"  # type: ignore[attr-defined]
    )
    print()
    print(
        f"| store | full download of {args.size_mib} MiB, MiB/s (median, min-max) | 1-byte range TTFB, ms "
        f"(p50 / p90), {args.size_mib} MiB blob | the same, {args.small_mib} MiB blob |"
    )
    print("|---|---|---|---|")
    for alias, label in (("blobs", "filesystem"), ("blobs_s3", "S3 (moto, loopback)")):
        t = throughput[alias]
        print(
            f"| {label} | {statistics.median(t):.0f} ({min(t):.0f}-{max(t):.0f}) | "
            f"{p(ttfb[alias], 50) * 1000:.1f} / {p(ttfb[alias], 90) * 1000:.1f} | "
            f"{p(ttfb_small[alias], 50) * 1000:.1f} / {p(ttfb_small[alias], 90) * 1000:.1f} |"
        )
    print()
    print(
        f"S3 requests for one full download of the {segments}-segment blob: "
        f"{after_full[0] - before[0]} GET, {after_full[1] - before[1]} HEAD; "
        f"for one 1-byte range: {after_range[0] - after_full[0]} GET, {after_range[1] - after_full[1]} HEAD."
    )


if __name__ == "__main__":
    main()
