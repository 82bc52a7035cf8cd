"""``make run``'s first step: are the ports it serves on free? (``python -m erphub.ports HOST PORT...``)

Gunicorn finds a busy port only after the key, the migrations and the admin account, and then retries it
for five seconds, logging each attempt; this says it in one line before anything else runs,
and before anything claims "Serving on …". Standard library only: no Django is needed to bind a socket.
"""

from __future__ import annotations

import socket
import sys


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` (binding as gunicorn does, with SO_REUSEADDR, so that a
    connection of an earlier run waiting in TIME_WAIT does not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def main(argv: list[str]) -> int:
    """``HOST PORT [NAME=PORT ...]``: the first port is the server's (``PORT``), the others are named by
    the make variable that sets them (``METRICS_PORT=8100``); an empty value is skipped (not served)."""
    if len(argv) < 2:
        print("usage: python -m erphub.ports HOST PORT [NAME=PORT ...]", file=sys.stderr)
        return 2
    host, *specs = argv
    for spec in specs:
        name, _, value = spec.rpartition("=")
        name = name or "PORT"
        if not value:
            continue
        if not value.isdigit() or not 0 < int(value) < 65536:
            print(f"{name}={value} is not a port number (1-65535).", file=sys.stderr)
            return 2
        if port_in_use(host, int(value)):
            hint = f"make run {name}={int(value) + 1}"
            print(
                f"Port {value} on {host} is in use ({name}): stop what listens there, or {hint}.",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
