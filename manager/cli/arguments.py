"""argparse pieces every ``ptap`` command's parser uses: the parser, value types."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from manager.cli.address import EXIT_USAGE


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"ptap: {message} — see {self.prog} --help\n")

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse makes a formatter on every add_argument (to check its metavar),
        # and each asks shutil for the terminal's width: shutil's import (with bz2
        # and lzma) cost every command ~3 ms of its start. The same width, from os.
        return argparse.HelpFormatter(self.prog, width=help_width())  # no other class is used


def help_width() -> int:
    """The width argparse's formatter takes from ``shutil.get_terminal_size``: $COLUMNS,
    else the terminal's, else 80; less 2, as argparse does."""
    columns = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):  # no stdout, or not a terminal
            columns = 0
    return (columns or 80) - 2


def positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a count of at least 1")
    return value
