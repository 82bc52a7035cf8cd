"""core/terminal.py: argument types, the progress bar's terminal-only rule, notes that are not errors."""

from __future__ import annotations

import argparse
import io

import pytest
from django.core.management.base import BaseCommand, OutputWrapper

from core.terminal import non_negative_int, positive_int, progress


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        (positive_int, "1", 1),
        (positive_int, "100", 100),
        (non_negative_int, "0", 0),
        (non_negative_int, "7", 7),
    ],
)
def test_whole_numbers_in_range(parse, text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (positive_int, "0", "must be at least 1 (got 0)"),
        (positive_int, "-3", "must be at least 1 (got -3)"),
        (non_negative_int, "-1", "must be at least 0 (got -1)"),
        (positive_int, "ten", "'ten' is not a whole number"),
        (positive_int, "1.5", "'1.5' is not a whole number"),
    ],
)
def test_out_of_range_or_not_a_number(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse(text)
    assert str(info.value) == message


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def command_on(stream: io.StringIO) -> BaseCommand:
    command = BaseCommand()
    command.stderr = OutputWrapper(stream)
    return command


def test_no_bar_when_stderr_is_not_a_terminal():
    stream = io.StringIO()
    with progress(command_on(stream), total=10) as bar:
        bar.update(10)
    assert stream.getvalue() == ""


def test_a_bar_on_a_terminal_counts_what_it_is_told():
    # The log lines it lets through whole are checked on a real pseudo-terminal
    # (blobs/tests/test_commands_terminal.py): only there is the handler's stream the process's stderr.
    stream = Terminal()
    with progress(command_on(stream), total=3 << 20) as bar:
        bar.update(3 << 20)
    assert "\r" in stream.getvalue()
    assert "3.00M/3.00M" in stream.getvalue()  # bytes, in binary units
