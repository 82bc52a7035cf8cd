"""Throughput of the blob format (blobs/crypto.py) at 64 KiB and 1 MiB segments.

Standalone, not run by the tests::

    .venv/bin/python bench/bench_crypto.py [--mib 256] [--runs 3]

Encrypts ~256 MiB through ``Encryptor.update`` in segment-sized chunks from one reused buffer, then
decrypts it with ``Decryptor.iter_all`` and with ``iter_range`` over a range with partial edge segments,
reading from an in-memory stream (so no disk I/O is measured). Prints a markdown table of median MB/s
(10**6 bytes of plaintext per second) and, for reference, raw AES-GCM ``decrypt_into`` on one buffer.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from blobs.crypto import Decryptor, Encryptor, StreamParams

DEK = os.urandom(32)
AD = os.urandom(16)


def _median_rate(fn: Callable[[], int], runs: int) -> float:
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        nbytes = fn()
        rates.append(nbytes / (time.perf_counter() - t0) / 1e6)
    return statistics.median(rates)


def bench(segment_size: int, total: int, runs: int) -> list[tuple[str, float]]:
    params = StreamParams(segment_size=segment_size)
    chunk = os.urandom(segment_size)
    n_chunks = total // segment_size
    size = n_chunks * segment_size

    def encrypt() -> int:
        enc = Encryptor(DEK, AD, params)
        for _ in range(n_chunks):
            enc.update(chunk)
        enc.finalize()
        return size

    enc = Encryptor(DEK, AD, params)
    ciphertext = b"".join([*(enc.update(chunk) for _ in range(n_chunks)), enc.finalize()])
    header = ciphertext[: params.header_size]

    def decrypt_all() -> int:
        dec = Decryptor(DEK, AD, header, plaintext_size=size, params=params)
        raw = io.BytesIO(ciphertext)
        raw.seek(params.header_size)
        for _ in dec.iter_all(raw):
            pass
        return size

    start, stop = 12345, size - 12345

    def decrypt_range() -> int:
        dec = Decryptor(DEK, AD, header, plaintext_size=size, params=params)
        raw = io.BytesIO(ciphertext)
        raw.seek(dec.span(start, stop)[0])
        for _ in dec.iter_range(raw, start, stop):
            pass
        return stop - start

    aead = AESGCM(os.urandom(32))
    nonce = os.urandom(12)
    sealed = aead.encrypt(nonce, chunk[: params.segment_plaintext], None)
    out = bytearray(params.segment_plaintext)

    def raw_gcm() -> int:
        for _ in range(n_chunks):
            aead.decrypt_into(nonce, sealed, None, out)
        return n_chunks * len(out)

    return [
        ("encrypt (update, segment-sized chunks)", _median_rate(encrypt, runs)),
        ("decrypt iter_all", _median_rate(decrypt_all, runs)),
        ("decrypt iter_range (partial edges)", _median_rate(decrypt_range, runs)),
        ("raw AES-GCM decrypt_into, one buffer (ceiling)", _median_rate(raw_gcm, runs)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="plaintext size per run, MiB")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median reported)")
    args = parser.parse_args()

    sizes = [(64 << 10, "64 KiB"), (1 << 20, "1 MiB")]
    results = {label: dict(bench(segment, args.mib << 20, args.runs)) for segment, label in sizes}
    ops = list(next(iter(results.values())))
    print(f"{args.mib} MiB plaintext, median of {args.runs} runs, MB/s (10^6 B/s), one core\n")
    print("| operation | " + " | ".join(label for _, label in sizes) + " |")
    print("|---|" + "--:|" * len(sizes))
    for op in ops:
        print(f"| {op} | " + " | ".join(f"{results[label][op]:,.0f}" for _, label in sizes) + " |")


if __name__ == "__main__":
    main()
