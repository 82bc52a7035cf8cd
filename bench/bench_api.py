"""API benchmark: the DRF endpoints (JWT and session) against the foundation's plain-Django views.

    .venv/bin/python bench/bench_api.py                      # the full run: 1 GiB, 5 download runs, 3 uploads
    .venv/bin/python bench/bench_api.py --size-mib 64 --runs 3 --upload-runs 1   # quick check

Two gunicorn servers (gthread 2 x 4, ``--no-sendfile``) share one fresh var dir and SQLite database:
``ours`` (erphub.settings: the DRF API) and ``foundation`` (bench/settings_bench.py, whose URLconf routes
the pre-DRF views of bench/foundationserve.py). Both call the same services.

- Download of one ``--size-mib`` blob with curl, ``--runs`` interleaved runs of each: the foundation's
  stream view (session), the API stream with a session cookie, the API stream with a JWT.
- Upload of a ``--size-mib`` file as a raw body (Content-Length, 1 MiB writes): the API with a JWT and the
  foundation view with a session, ``--upload-runs`` interleaved runs, the server's RSS (master + workers)
  sampled every 50 ms; each uploaded blob is deleted again. Like downloads, an upload during which other
  processes used more than a quarter of a core is discarded and repeated.

Prints markdown tables (median MB/s, ratios to the foundation). Temporary files live in one /tmp directory.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_download import (
    MIB,
    Approach,
    Quiet,
    Server,
    Session,
    cpu_capacity,
    log,
    machine_facts,
    rss_sampler,
    start_server,
    throughput,
    write_random,
)
from blobs.tests.liveserver import manage, prepare_database, server_env

USERNAME = "admin"


def upload(session: Session, path: str, file: Path, headers: dict[str, str]) -> tuple[dict, float]:
    started = time.perf_counter()
    created = session.upload_raw(file, url=path, headers=headers)
    return created, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5, help="interleaved download runs per approach")
    parser.add_argument("--upload-runs", type=int, default=5, help="interleaved upload runs per approach")
    args = parser.parse_args()
    size = args.size_mib * MIB
    work = Path(tempfile.mkdtemp(prefix="erphub-bench-api-", dir="/tmp"))
    servers: list[Server] = []
    try:
        var_dir = work / "var"
        var_dir.mkdir()
        plain = work / f"plain-{args.size_mib}mib.bin"
        password = secrets.token_urlsafe(18)
        env = server_env(var_dir, username=USERNAME, password=password, key_id="bench-1")
        env["JWT_ACCESS_MINUTES"] = "240"  # one token for the whole run
        env["UPLOAD_THROTTLE_RATE"] = "1000/min"
        log(f"work dir {work}; writing {args.size_mib} MiB of random plaintext")
        write_random(plain, size)
        prepare_database(env)
        blob_id = manage(env, "blobs_import", str(plain), "--owner", USERNAME).split("\t", 1)[0].strip()

        ours = start_server("ours", env, work, settings="erphub.settings", sendfile=False)
        foundation = start_server("foundation", env, work, settings="bench.settings_bench", sendfile=False)
        servers += [ours, foundation]
        for server in servers:
            server.wait_until_healthy()
        session = Session(ours, timeout=600)
        session.login(USERNAME, password)
        cookie = f"sessionid={session.cookies['sessionid']}"
        foundation_session = Session(foundation, timeout=600)
        foundation_session.cookies = dict(session.cookies)  # same database: the same session works there
        token = json.loads(
            session.request(
                "POST",
                "/api/token/",
                body=json.dumps({"username": USERNAME, "password": password}),
                headers={"Content-Type": "application/json"},
            ).body
        )["access"]
        bearer = f"Authorization: Bearer {token}"

        approaches = [
            Approach(
                "foundation: plain Django stream view (session)",
                foundation.url(f"/foundation/files/{blob_id}/stream"),
                cookie,
                foundation,
            ),
            Approach(
                "API: DRF stream view, session", ours.url(f"/secure/files/{blob_id}/stream"), cookie, ours
            ),
            Approach(
                "API: DRF stream view, JWT",
                ours.url(f"/secure/files/{blob_id}/stream"),
                None,
                ours,
                headers=(bearer,),
            ),
        ]
        quiet = Quiet()
        capacity = cpu_capacity()
        log(f"downloads: {args.runs} interleaved runs of {args.size_mib} MiB")
        throughput(approaches, size=size, runs=args.runs, quiet=quiet)

        log(f"uploads: {args.upload_runs} interleaved runs of {args.size_mib} MiB")
        uploads: dict[str, dict[str, list[float]]] = {
            "API (JWT), POST /secure/files/": {"mbps": [], "rss_growth": [], "rss_peak": []},
            "foundation (session), plain Django view": {"mbps": [], "rss_growth": [], "rss_peak": []},
        }
        targets = {
            "API (JWT), POST /secure/files/": (
                ours,
                session,
                "/secure/files/",
                {"Authorization": f"Bearer {token}"},
            ),
            "foundation (session), plain Django view": (
                foundation,
                foundation_session,
                "/foundation/files/",
                {"X-CSRFToken": session.cookies["csrftoken"]},
            ),
        }
        names = list(targets)
        for run in range(args.upload_runs):
            for name in names[run % 2 :] + names[: run % 2]:
                server, client, path, headers = targets[name]
                for attempt in range(1, quiet.retries + 2):
                    # Start each upload with no dirty pages left by the previous one: their write-back
                    # would otherwise land on whichever upload runs next.
                    os.sync()
                    quiet.wait()
                    before = server.rss_bytes()
                    own0 = os.times()
                    with quiet.watch(server) as others, rss_sampler(server) as samples:
                        created, seconds = upload(client, path, plain, headers)
                    own1 = os.times()
                    after = server.rss_bytes()
                    # The client is this process (not a child, which watch() already subtracts).
                    own = (own1.user - own0.user + own1.system - own0.system) / seconds
                    elsewhere = max(0.0, others[0] - own)
                    if created["size"] != size:
                        raise RuntimeError(f"{name}: stored {created['size']} bytes of {size}")
                    delete = session.request(
                        "DELETE",
                        f"/secure/files/{created['id']}/",
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    if delete.status != 204:
                        raise RuntimeError(f"delete after upload: {delete.status}")
                    if elsewhere <= quiet.others_limit or attempt > quiet.retries:
                        break
                    quiet.discarded += 1
                    log(f"  upload discarded: other processes used {elsewhere:.2f} cores; again")
                uploads[name]["mbps"].append(size / seconds / 1e6)
                uploads[name]["rss_growth"].append((after - before) / MIB)
                uploads[name]["rss_peak"].append((max([*samples, after]) - before) / MIB)
                log(f"upload run {run + 1} {name}: {size / seconds / 1e6:,.0f} MB/s")

        facts = machine_facts()
        facts["AES-GCM capacity (before)"] = capacity
        print(f"## API vs foundation ({args.size_mib} MiB, {facts['date']})\n")
        print("| | |\n|---|---|")
        for key, value in facts.items():
            print(f"| {key} | {value} |")
        base = approaches[0].mbps
        print(
            "\n| download | MB/s (median) | min–max | ratio of medians | median of per-run ratios |"
            "\n|---|--:|--:|--:|--:|"
        )
        for approach in approaches:
            low, high = min(approach.speeds) / 1e6, max(approach.speeds) / 1e6
            ratio = approach.mbps / base
            # Runs are interleaved, so run i of each approach met the same machine: pair them.
            pairs = zip(approach.speeds, approaches[0].speeds, strict=True)
            paired = statistics.median(a / b for a, b in pairs)
            print(
                f"| {approach.label} | {approach.mbps:,.0f} | {low:,.0f}–{high:,.0f} | {ratio:.2f} "
                f"| {paired:.2f} |"
            )
        up_base = statistics.median(uploads[names[1]]["mbps"])
        print(
            "\n| upload (raw body) | MB/s (median) | min–max | ratio of medians | median of per-run ratios "
            "| RSS growth after / peak (MiB, max) |"
            "\n|---|--:|--:|--:|--:|--:|"
        )
        for name in names:
            stats = uploads[name]
            mbps = statistics.median(stats["mbps"])
            paired = statistics.median(
                a / b for a, b in zip(stats["mbps"], uploads[names[1]]["mbps"], strict=True)
            )
            print(
                f"| {name} | {mbps:,.0f} | {min(stats['mbps']):,.0f}–{max(stats['mbps']):,.0f} | "
                f"{mbps / up_base:.2f} | {paired:.2f} | "
                f"{max(stats['rss_growth']):.1f} / {max(stats['rss_peak']):.1f} |"
            )
        print(
            f"\nquiet: waited {quiet.waited:.0f} s for an idle machine; {quiet.noisy} measurement(s) started "
            f"busy; {quiet.discarded} discarded and repeated."
        )
        return 0
    finally:
        for server in servers:
            server.stop(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
