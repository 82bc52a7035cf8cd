"""What every management command shares about the terminal (architecture.md §10 conventions): a progress
bar that is drawn only on a terminal and that log lines do not cut through, notes on stderr that are not
painted as errors, and argument types that refuse a bad number before any work starts.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

# Loggers with their own console handler (propagate=False): the audit log's JSON lines (erphub/settings.py).
CONSOLE_LOGGERS = ("audit", "erphub.access")


class OperatorCommand(BaseCommand):
    """A management command whose argument mistakes are one line: argparse prints the usage before its
    error, and Django's usage lists a dozen options every command has, burying the line that says what is
    wrong. ``--help`` still shows the usage in full."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # argparse calls print_usage only on an error (--help formats the usage itself).
        setattr(parser, "print_usage", _no_usage)  # noqa: B010 (mypy refuses assigning to a method)
        return parser


def _no_usage(file: Any = None) -> None:
    return None


def note(command: BaseCommand, message: str) -> None:
    """A line for the operator on stderr that is not an error. Django paints everything written to a
    command's stderr red on a terminal; "Wrote out.bin" is not a failure."""
    command.stderr.write(message, style_func=lambda text: text)


def _console_loggers() -> list[logging.Logger]:
    loggers = [logging.root, *(logging.getLogger(name) for name in CONSOLE_LOGGERS)]
    # Only loggers that write to the console themselves: redirecting one that only propagates would give
    # it a console handler of its own and print its lines twice.
    return [log for log in loggers if any(isinstance(h, logging.StreamHandler) for h in log.handlers)]


@contextmanager
def progress(command: BaseCommand, *, total: int, unit: str = "B") -> Iterator[tqdm]:
    """A progress bar on the command's stderr, drawn only when that is a terminal (tqdm's ``disable=None``):
    piped or redirected output carries no carriage returns. While it is drawn, console log lines (the audit
    events' JSON) go through the bar's writer, which clears the bar, prints the line whole and redraws it."""
    scale: dict[str, Any] = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
    stream = command.stderr._out
    with tqdm(total=total, unit=unit, file=stream, disable=None, dynamic_ncols=True, **scale) as bar:
        if bar.disable:
            yield bar
            return
        with logging_redirect_tqdm(loggers=_console_loggers()):
            yield bar


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a batch size, a sample)."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0 (a grace period)."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum} (got {value})")
    return value
