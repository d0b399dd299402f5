"""What a run printed: the bounded tail of each stream, and its lines for a hook.

The last ``limit`` bytes of stdout and stderr are kept as bytes and decoded
with ``errors="replace"`` only when reported, so a test printing gigabytes or
invalid UTF-8 costs the agent a fixed amount of memory and cannot break a
``run.update``. Complete lines are handed to an ``on_line(stream, line)`` hook
as they arrive, for ``PTAP mark`` lines and the live view.

It lives apart from :mod:`agent.runner` because it is pure byte handling: no
process, no loop and no clock, so its bounds can be read (and tested) without
the run state machine around them.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["LineCallback", "OutputTail"]

#: ``on_line(stream, line)``: ``stream`` is ``"stdout"`` or ``"stderr"``, ``line`` has no newline.
LineCallback = Callable[[str, str], None]


class OutputTail:
    """The last ``limit`` bytes of one stream, plus line splitting for a hook."""

    def __init__(self, stream: str, limit: int, max_line: int,
                 on_line: LineCallback | None) -> None:
        self.stream = stream
        self._limit = limit
        self._max_line = max_line
        self._on_line = on_line
        self._tail = bytearray()
        self._partial = bytearray()

    def feed(self, data: bytes) -> None:
        """Keep ``data`` in the bounded tail and emit every line it completes."""
        self._tail += data
        if len(self._tail) > self._limit:
            del self._tail[: len(self._tail) - self._limit]
        if self._on_line is None:
            return
        self._partial += data
        *lines, rest = self._partial.split(b"\n")
        for line in lines:
            self._emit(line)
        # An endless line is handed on in max_line pieces rather than held whole.
        whole = len(rest) - len(rest) % self._max_line
        if whole:
            self._emit(rest[:whole])
        self._partial = bytearray(rest[whole:])

    def flush(self) -> None:
        """Emit a last line that had no newline."""
        if self._partial and self._on_line is not None:
            self._emit(self._partial)
        self._partial = bytearray()

    def text(self) -> str:
        return self._tail.decode("utf-8", errors="replace")

    def _emit(self, line: bytes | bytearray) -> None:
        assert self._on_line is not None
        line = bytes(line).rstrip(b"\r")
        for at in range(0, max(len(line), 1), self._max_line):
            piece = line[at:at + self._max_line]
            self._on_line(self.stream, piece.decode("utf-8", errors="replace"))
