"""``ptap shell``: the interactive admin shell (docs/architecture.md#commands).

Every line is a ``ptap`` command without the ``ptap`` in front (``nodes``,
``run --wait -- sleep 2``, ``job ID``...), run by the very parser and
handlers the command line uses, so the shell and the CLI can never drift
apart. The shell adds what people expect of one: history kept across
sessions (``~/.ptap_history``, or ``$PTAP_HISTORY``), tab completion of
command names, options, node names and job ids (asked of the manager, at most
once every few seconds), ``help [COMMAND]``, and ``exit`` / Ctrl-D.

A failing command prints its one-line error and the shell goes on. When
standard input is not a terminal the shell reads commands from it without a
prompt, so ``ptap shell < script`` runs a script and exits with the status of
its last command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from bus.client import ManagerClient
from bus.errors import PtapError
from bus.sockets import CurveKeys

try:  # readline is absent on some builds; the shell then works without editing
    import readline
except ImportError:  # pragma: no cover - CPython on Debian has it
    readline = None  # type: ignore[assignment]

HISTORY_LINES = 1000
CACHE_SECONDS = 5.0
BUILTINS = ("help", "exit", "quit")


class Shell:
    """A read-eval-print loop over ``run_command(argv) -> status``."""

    def __init__(self, parser: argparse.ArgumentParser,
                 run_command: Callable[[list[str]], int], manager: str, timeout: float,
                 stdin: TextIO | None = None, stdout: TextIO | None = None,
                 curve: CurveKeys | None = None) -> None:
        self.parser = parser
        self.run_command = run_command
        self.manager = manager
        self.timeout = timeout
        self.curve = curve  # for the completion's own requests (ptap --keys)
        self.stdin: TextIO = stdin or sys.stdin
        self.stdout: TextIO = stdout or sys.stdout
        self.status = 0
        self._names: list[str] = []
        self._names_at = 0.0

    @property
    def interactive(self) -> bool:
        return bool(getattr(self.stdin, "isatty", lambda: False)())

    def loop(self) -> int:
        """Read and run lines until ``exit`` or end of input; returns the last status."""
        with self._history():
            if self.interactive:
                print(f"ptap shell — manager {self.manager}; 'help' lists commands, "
                      "Ctrl-D leaves", file=self.stdout)
            for line in self._lines():
                words = self._split(line)
                if not words:
                    continue
                if words[0] in ("exit", "quit"):
                    break
                self.status = self.one(words)
        return self.status

    def one(self, words: list[str]) -> int:
        """Run one command line (already split); never raises for a failing command."""
        if words[0] == "help":
            return self._help(words[1:])
        if words[0] == "shell":
            print("ptap: already in the shell — type a command, or exit", file=sys.stderr)
            return 2
        try:
            return self.run_command(words)
        except SystemExit as exc:  # argparse's usage errors and --help
            return exc.code if isinstance(exc.code, int) else 2
        except KeyboardInterrupt:
            print("", file=self.stdout)
            return 130

    def _lines(self) -> Iterator[str]:
        while True:
            try:
                if self.interactive:
                    line = input("ptap> ")
                else:
                    line = self.stdin.readline()
                    if not line:
                        return
            except EOFError:
                print("", file=self.stdout)
                return
            except KeyboardInterrupt:
                print("", file=self.stdout)  # Ctrl-C clears the line, as in bash
                continue
            yield line

    @staticmethod
    def _split(line: str) -> list[str]:
        try:
            return shlex.split(line, comments=True)
        except ValueError as exc:
            print(f"ptap: cannot parse that line ({exc}) — check the quotes", file=sys.stderr)
            return []

    def _help(self, topic: list[str]) -> int:
        if topic:
            return self.one([*topic, "--help"])
        print("commands: " + ", ".join([*self.commands(), *BUILTINS]), file=self.stdout)
        print("'help COMMAND' shows its options; lines are ptap commands without 'ptap'",
              file=self.stdout)
        return 0

    # --- completion ---------------------------------------------------------------

    def commands(self) -> list[str]:
        return sorted(_subparsers(self.parser))

    def complete(self, text: str, state: int) -> str | None:
        """readline completer: command names first, then options, nodes and job ids."""
        if readline is None:
            return None
        line = readline.get_line_buffer()[: readline.get_endidx()]
        matches = self.candidates(line, text)
        return matches[state] if state < len(matches) else None

    def candidates(self, line: str, text: str) -> list[str]:
        """What may complete ``text`` at the end of ``line`` (a pure function but for
        the names it asks the manager for)."""
        words = line.split()
        if len(words) == 0 or (len(words) == 1 and not line.endswith(" ")):
            pool = [*self.commands(), *BUILTINS]
        elif text.startswith("-"):
            sub = _subparsers(self.parser).get(words[0])
            pool = [o for a in (sub._actions if sub else []) for o in a.option_strings]
        else:
            pool = self.names()
        return sorted(w + " " for w in pool if w.startswith(text))

    def names(self) -> list[str]:
        """Node names and recent job ids, cached for a few seconds."""
        now = time.monotonic()
        if now - self._names_at > CACHE_SECONDS:
            self._names_at = now
            with contextlib.suppress(PtapError, OSError):
                self._names = asyncio.run(self._fetch_names())
        return self._names

    async def _fetch_names(self) -> list[str]:
        async with ManagerClient(f"tcp://{self.manager}", timeout=min(self.timeout, 1.0),
                                 curve=self.curve) as c:
            nodes = [n["name"] for n in await c.nodes()]
            jobs = [j["id"] for j in await c.jobs(limit=50)]
        return nodes + jobs

    @contextlib.contextmanager
    def _history(self) -> Iterator[None]:
        if readline is None or not self.interactive:
            yield
            return
        path = Path(os.environ.get("PTAP_HISTORY", Path.home() / ".ptap_history"))
        with contextlib.suppress(OSError):
            readline.read_history_file(path)
        readline.set_history_length(HISTORY_LINES)
        readline.set_completer(self.complete)
        readline.set_completer_delims(" \t")
        readline.parse_and_bind("tab: complete")
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                readline.write_history_file(path)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {name: p for name, p in action.choices.items() if name != "shell"}
    return {}
