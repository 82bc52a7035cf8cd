"""Per-call cost of small ranges through the decryptor, this tree's blobs/crypto.py vs another revision's.

Standalone, not run by the tests::

    .venv/bin/python bench/bench_range_decrypt.py --base-rev cd55fc1 [--calls 60] [--rounds 9]

One run measures both variants over one real ciphertext file (16 MiB of plaintext, 1 MiB segments, the
default format) in the page cache: ``new`` is this tree's ``blobs.crypto``, ``base`` the module at
``--base-rev`` (``git show REV:blobs/crypto.py``, imported under another name). Each call does what a download
of that range does in process on the filesystem store (``blob_open``, then ``BlobReader.iter_paced``): open
and read the header, build the ``Decryptor`` (HKDF), open the object at the range's span and pull the range
through ``blobs.pacing.paced`` (so a piece smaller than a segment is cut from a fresh decryption of it), then
close. No Django, no audit, no network: only the part of a request that the decryptor's buffers touch.

Every measurement runs in a new child process, the variants alternating (base, new, new, base, ...), since
what a new megabyte-sized ``bytearray`` costs depends on the C heap's history more than on this code: glibc
serves it from fresh pages (page faults, then the zero-fill) or from a free chunk it kept (just the
zero-fill), according to thresholds it raises after freeing a large block. Two heap states are measured:
``fresh`` (the child has only imported the modules) and ``warm`` (it first allocated and freed a 16 MiB
block, which raises glibc's mmap and trim thresholds to that size, the most favourable state for
allocating). A worker is somewhere between, depending on what it served before.

Figures are CPU time per call on the measuring thread (µs; the machine is shared and CPU time leaves out the
time others had the core), the median over rounds, with ``new / base`` the median of the per-round ratios
and the minor page faults per call. For scale it also prints the physical limit of one segment on one thread,
measured in a child of the same run: AES-GCM ``decrypt_into`` of one whole segment into a reused buffer
(needed to check its tag) and the ``readinto`` of its ciphertext from the page cache into a reused buffer; a
range within one segment cannot cost less than their sum.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blobs import crypto as new_crypto
from blobs.pacing import paced

ROOT = Path(__file__).resolve().parent.parent

PARAMS = new_crypto.DEFAULT_PARAMS
SEG = PARAMS.segment_size
PS = PARAMS.segment_plaintext
SIZE = 16 * PS + 12345
FIRST = PARAMS.first_segment_plaintext
IN5 = FIRST + 4 * PS + 1000  # somewhere inside segment 5
CASES = [
    ("1 B at offset 0 (segment 0)", 0, 1),
    ("1 B inside segment 5", IN5, IN5 + 1),
    ("64 KiB inside segment 5", IN5, IN5 + (64 << 10)),
    ("64 KiB across segments 5-6", FIRST + 5 * PS - (32 << 10), FIRST + 5 * PS + (32 << 10)),
    ("segment 5 whole (paced: 5 pieces)", FIRST + 4 * PS, FIRST + 5 * PS),
    ("4 MiB from inside segment 5 (paced, then whole segments)", IN5, IN5 + (4 << 20)),
]


def load_base(source: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("crypto_base", source)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["crypto_base"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def make_call(
    mod: ModuleType, path: Path, keys: tuple[bytes, bytes], start: int, stop: int
) -> Callable[[], int]:
    params = mod.DEFAULT_PARAMS

    def call() -> int:
        with open(path, "rb", buffering=0) as head:
            header = head.read(params.header_size)
        dec = mod.Decryptor(*keys, header, plaintext_size=SIZE, params=params)
        raw = open(path, "rb", buffering=0)  # noqa: SIM115 — closed below, as iter_paced does
        raw.seek(dec.span(start, stop)[0])

        def read(a: int, b: int) -> Iterator[bytes]:
            raw.seek(dec.span(a, b)[0])
            yield from dec.iter_range(raw, a, b)

        got = 0
        try:
            for chunk in paced(
                read, start, stop, segment_end=params.segment_end, segment_plaintext=params.segment_plaintext
            ):
                got += len(chunk)
        finally:
            raw.close()
        assert got == stop - start
        return got

    return call


def per_call(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    """(CPU µs, minor page faults) per call, on this thread."""
    f0 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    t0 = time.thread_time()
    for _ in range(calls):
        fn()
    t1 = time.thread_time()
    f1 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    return (t1 - t0) / calls * 1e6, (f1 - f0) / calls


def child(args: argparse.Namespace) -> None:
    keys = (bytes.fromhex(args.dek), bytes.fromhex(args.ad))
    if args.heap == "warm":
        # Allocated and freed at once: glibc raises its thresholds to its size (up to its 32 MiB maximum).
        bytearray(16 << 20)
    out: dict[str, tuple[float, float]] = {}
    if args.child == "limit":
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        aead = AESGCM(os.urandom(32))
        nonce = os.urandom(12)
        sealed = aead.encrypt(nonce, os.urandom(PS), None)
        pt, ct = bytearray(PS), bytearray(SEG)

        def read() -> None:
            with open(args.path, "rb", buffering=0) as raw:
                raw.seek(5 * SEG)
                raw.readinto(ct)

        out["gcm"] = per_call(lambda: aead.decrypt_into(nonce, sealed, None, pt), args.calls)
        out["read"] = per_call(read, args.calls)
    else:
        mod = load_base(Path(args.base_module)) if args.child == "base" else new_crypto
        for label, start, stop in CASES:
            fn = make_call(mod, Path(args.path), keys, start, stop)
            fn()  # warm-up, and the range's length is checked
            out[label] = per_call(fn, args.calls if stop - start < SEG else max(1, args.calls // 8))
    print(json.dumps(out))


def run_child(
    name: str, heap: str, work: Path, keys: tuple[bytes, bytes], calls: int
) -> dict[str, list[float]]:
    argv = [sys.executable, __file__, "--child", name, "--heap", heap, "--calls", str(calls)]
    argv += ["--path", str(work / "blob"), "--base-module", str(work / "crypto_base.py")]
    argv += ["--dek", keys[0].hex(), "--ad", keys[1].hex()]
    result: dict[str, list[float]] = json.loads(subprocess.run(argv, check=True, capture_output=True).stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-rev", default="main", help="git revision of the 'base' blobs/crypto.py")
    parser.add_argument("--calls", type=int, default=60, help="calls per case in a child")
    parser.add_argument("--rounds", type=int, default=9, help="children per variant and heap state")
    for name in ("--child", "--heap", "--path", "--base-module", "--dek", "--ad"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    keys = (os.urandom(32), os.urandom(16))
    with tempfile.TemporaryDirectory(prefix="bench-range-decrypt-") as tmp:
        work = Path(tmp)
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{args.base_rev}:blobs/crypto.py"],
            check=True,
            capture_output=True,
        ).stdout
        (work / "crypto_base.py").write_bytes(source)
        (work / "blob").write_bytes(new_crypto.encrypt(*keys, os.urandom(SIZE)))
        results: dict[tuple[str, str], list[dict[str, list[float]]]] = {}
        for rnd in range(args.rounds):
            for heap in ("fresh", "warm"):
                order = ["base", "new"] if rnd % 2 == 0 else ["new", "base"]
                for name in order:
                    results.setdefault((heap, name), []).append(run_child(name, heap, work, keys, args.calls))
        limits = [run_child("limit", "fresh", work, keys, 4 * args.calls) for _ in range(3)]

    print(f"blobs/crypto.py at {args.base_rev} (base) vs this tree (new): {args.rounds} child processes")
    print("per variant and heap state, alternating; CPU µs per call, median; minor page faults per call\n")
    print("| range (paced, as iter_paced) | heap | base µs | new µs | new / base | faults base / new |")
    print("|---|---|--:|--:|--:|--:|")
    for heap in ("fresh", "warm"):
        for label, _, _ in CASES:
            base = [r[label] for r in results[(heap, "base")]]
            new = [r[label] for r in results[(heap, "new")]]
            ratio = statistics.median(n[0] / b[0] for b, n in zip(base, new, strict=True))
            b_us, n_us = (statistics.median(x[0] for x in runs) for runs in (base, new))
            b_f, n_f = (statistics.median(x[1] for x in runs) for runs in (base, new))
            print(f"| {label} | {heap} | {b_us:,.0f} | {n_us:,.0f} | {ratio:.2f} | {b_f:,.0f} / {n_f:,.0f} |")
    gcm_us = statistics.median(r["gcm"][0] for r in limits)
    read_us = statistics.median(r["read"][0] for r in limits)
    print(
        f"\nPhysical limit, same run (CPU µs): AES-GCM decrypt_into of one 1 MiB segment {gcm_us:,.0f} µs "
        f"({PS / gcm_us / 1e3:,.2f} GB/s), readinto of its ciphertext {read_us:,.0f} µs: "
        f"{gcm_us + read_us:,.0f} µs per segment touched."
    )


if __name__ == "__main__":
    main()
