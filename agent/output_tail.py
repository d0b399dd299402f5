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

#: Trailing CRs held back at most (past this they are handed on as content).
CR_FLOOD = 1 << 16
#: ``on_line(stream, line)``: ``stream`` is ``"stdout"`` or ``"stderr"``, ``line`` has no newline.
LineCallback = Callable[[str, str], None]


class OutputTail:
    """The last ``limit`` bytes of one stream, plus line splitting for a hook.

    Lines are what splitting the whole stream on ``\\n`` would give, trailing
    CRs stripped, then cut into ``max_line`` pieces; the same whatever the
    chunks were. An endless line is handed on in pieces as it arrives, and a
    piece goes out only once its line's end can no longer change it (a byte
    other than CR follows it).
    """

    def __init__(self, stream: str, limit: int, max_line: int,
                 on_line: LineCallback | None) -> None:
        self.stream = stream
        self._limit = limit
        self._max_line = max_line
        self._on_line = on_line
        self._tail = bytearray()
        self._partial = bytearray()  # the current line's bytes not handed on yet
        self._continued = False  # pieces of the current line were handed on

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
            self._end_line(line)
        self._partial = bytearray(self._hand_on_pieces(rest))

    def flush(self) -> None:
        """Emit a last line that had no newline."""
        if self._partial and self._on_line is not None:
            self._end_line(self._partial)
        self._partial = bytearray()
        self._continued = False

    def text(self) -> str:
        return self._tail.decode("utf-8", errors="replace")

    def _hand_on_pieces(self, rest: bytes | bytearray) -> bytes | bytearray:
        """Emit the whole ``max_line`` pieces of an unfinished line that are final; the rest."""
        # Only CRs at the very end of a line are stripped, so bytes before the
        # last non-CR one are final. A flood of bare CRs is not held whole.
        final = len(rest.rstrip(b"\r"))
        if len(rest) - final >= CR_FLOOD:
            final = len(rest)
        whole = final - final % self._max_line
        for at in range(0, whole, self._max_line):
            self._send(bytes(rest[at:at + self._max_line]))
        if whole:
            self._continued = True
        return rest[whole:]

    def _end_line(self, line: bytes | bytearray) -> None:
        line = bytes(line).rstrip(b"\r")
        continued, self._continued = self._continued, False
        if not line and continued:  # its pieces are out; the newline adds no line
            return
        for at in range(0, max(len(line), 1), self._max_line):
            self._send(line[at:at + self._max_line])

    def _send(self, piece: bytes) -> None:
        assert self._on_line is not None
        self._on_line(self.stream, piece.decode("utf-8", errors="replace"))
