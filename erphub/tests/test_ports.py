"""erphub/ports.py, ``make run``'s first step: a busy port is one line naming it and the way out."""

from __future__ import annotations

import socket

from blobs.tests.liveserver import HOST, free_port
from erphub.ports import main, port_in_use


def test_a_free_port_passes_and_an_empty_one_is_not_served():
    assert main([HOST, f"PORT={free_port()}", "METRICS_PORT="]) == 0


def test_a_busy_port_is_one_line_naming_it(capsys):
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_in_use(HOST, port)
        assert main([HOST, f"PORT={free_port()}", f"METRICS_PORT={port}"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"Port {port} on {HOST} is in use (METRICS_PORT): stop what listens there, "
        f"or make run METRICS_PORT={port + 1}.\n"
    )
    assert not port_in_use(HOST, port)  # closed: free again


def test_not_a_port_number(capsys):
    assert main([HOST, "PORT=http"]) == 2
    assert main([HOST, "PORT=70000"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "PORT=http is not a port number (1-65535).",
        "PORT=70000 is not a port number (1-65535).",
    ]
