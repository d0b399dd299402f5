"""agent.output_tail: the byte bound of the tail, and the lines handed to the hook."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from agent.output_tail import OutputTail


class Lines:
    """An ``on_line`` hook that records what it is handed."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []

    def __call__(self, stream: str, line: str) -> None:
        self.got.append((stream, line))

    @property
    def texts(self) -> list[str]:
        return [line for _, line in self.got]


def tail_with_lines(limit: int = 1 << 16, max_line: int = 1 << 16,
                    stream: str = "stdout") -> tuple[OutputTail, Lines]:
    lines = Lines()
    return OutputTail(stream, limit, max_line, lines), lines


def lines_of(chunks: Iterable[bytes], max_line: int = 1 << 16) -> list[str]:
    """Every line the hook hears for ``chunks``, including the one ``flush`` hands on."""
    tail, lines = tail_with_lines(max_line=max_line)
    for chunk in chunks:
        tail.feed(chunk)
    tail.flush()
    return lines.texts


# --- the bounded tail -------------------------------------------------------------

def test_tail_keeps_the_last_limit_bytes_after_every_feed() -> None:
    tail, _ = tail_with_lines(limit=10)
    fed = b""
    # Chunks smaller than, equal to and larger than the limit, and an empty one.
    for size in [3, 0, 4, 10, 1, 25, 2, 9]:
        chunk = bytes(ord("a") + (len(fed) + i) % 26 for i in range(size))
        tail.feed(chunk)
        fed += chunk
        assert tail.text() == fed[-10:].decode()
    assert len(fed) == 54 and len(tail.text()) == 10
    assert tail.text() == "stuvwxyzab"  # bytes 44..53 of the repeating alphabet


def test_tail_shorter_than_the_limit_is_kept_whole() -> None:
    tail, _ = tail_with_lines(limit=10)
    assert tail.text() == ""
    tail.feed(b"ab\n")
    assert tail.text() == "ab\n"


def test_tail_keeps_raw_bytes_that_the_lines_drop() -> None:
    """CRs, newlines and an unfinished line stay in the tail as printed."""
    tail, lines = tail_with_lines()
    tail.feed(b"a\r\nb\r\n\nc")
    assert tail.text() == "a\r\nb\r\n\nc"
    assert lines.texts == ["a", "b", ""]


def test_without_a_hook_the_tail_is_still_kept_and_flush_is_harmless() -> None:
    tail = OutputTail("stdout", 4, 2, None)
    tail.feed(b"no hook here\npartial")
    tail.flush()
    assert tail.text() == "tial"


def test_invalid_utf8_is_replaced_in_tail_and_lines() -> None:
    tail, lines = tail_with_lines()
    tail.feed(b"ok\xff\xfe\n\xc3(\n")
    assert lines.texts == ["ok\ufffd\ufffd", "\ufffd("]
    assert tail.text() == "ok\ufffd\ufffd\n\ufffd(\n"


@pytest.mark.parametrize("limit, text", [
    (3, "€"),             # exactly the last character's three bytes
    (4, "\ufffd€"),       # the cut leaves half of "é": replaced, never an error
    (6, "aé€"),
])
def test_limit_counts_bytes_and_a_cut_character_is_replaced(limit: int, text: str) -> None:
    tail, _ = tail_with_lines(limit=limit)
    tail.feed("aé€".encode())  # 1 + 2 + 3 bytes
    assert tail.text() == text


# --- lines for the hook -----------------------------------------------------------

def test_hook_hears_only_complete_lines_until_flush() -> None:
    tail, lines = tail_with_lines(stream="stderr")
    tail.feed(b"on")
    assert lines.got == []
    tail.feed(b"e\ntw")
    assert lines.got == [("stderr", "one")]
    tail.feed(b"o\n\nthr")
    assert lines.got == [("stderr", "one"), ("stderr", "two"), ("stderr", "")]
    tail.feed(b"ee")
    assert len(lines.got) == 3
    tail.flush()
    assert lines.got[3:] == [("stderr", "three")]
    tail.flush()  # nothing left to hand on
    assert len(lines.got) == 4


def test_flush_after_a_final_newline_adds_no_line() -> None:
    assert lines_of([b"a\n", b"b\n"]) == ["a", "b"]
    assert lines_of([]) == []
    assert lines_of([b""]) == []


def test_lines_do_not_depend_on_where_the_chunks_are_cut() -> None:
    data = b"alpha\r\n\nbeta gamma\n\xffx\r\ny\rz\ntail"
    whole = lines_of([data])
    assert whole == ["alpha", "", "beta gamma", "\ufffdx", "y\rz", "tail"]
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            assert lines_of([data[:i], data[i:j], data[j:]]) == whole, (i, j)


@pytest.mark.parametrize("chunks, lines", [
    ([b"a\r\nb\r\n"], ["a", "b"]),
    ([b"a\r", b"\nb"], ["a", "b"]),     # CR and LF in different chunks
    ([b"1\r2\n"], ["1\r2"]),            # a bare CR inside a line is kept
    ([b"x\r\r\n"], ["x"]),              # every CR before the LF goes
    ([b"\r\n"], [""]),
    ([b"y\r"], ["y"]),                  # and before the end of the last line, at flush
    ([b"\rlead\n"], ["\rlead"]),
])
def test_carriage_returns(chunks: list[bytes], lines: list[str]) -> None:
    assert lines_of(chunks) == lines


def test_endless_line_is_handed_on_in_max_line_pieces_as_it_arrives() -> None:
    tail, lines = tail_with_lines(max_line=4)
    for i, byte in enumerate(b"abcdefghij"):
        tail.feed(bytes([byte]))
        # A piece goes out as soon as max_line bytes are buffered, never later.
        assert len(lines.got) == (i + 1) // 4
    assert lines.texts == ["abcd", "efgh"]
    tail.feed(b"k\nnext\n")
    assert lines.texts == ["abcd", "efgh", "ijk", "next"]


@pytest.mark.parametrize("chunks", [
    [b"abcdefghij\n"],
    [b"abc", b"def", b"ghi", b"j\n"],
    [b"abcdefghi", b"j", b"\n"],
])
def test_long_line_pieces_are_the_same_however_it_arrives(chunks: list[bytes]) -> None:
    assert lines_of(chunks, max_line=4) == ["abcd", "efgh", "ij"]


def test_max_line_counts_bytes_and_a_cut_character_is_replaced() -> None:
    assert lines_of(["aé\n".encode()], max_line=2) == ["a\ufffd", "\ufffd"]


def test_line_of_exactly_max_line_then_newline_in_a_later_chunk() -> None:
    assert lines_of([b"abcd\nx\n"], max_line=4) == ["abcd", "x"]
    assert lines_of([b"abcd", b"\nx\n"], max_line=4) == ["abcd", "x"]


def test_cr_inside_a_long_line_at_a_piece_boundary() -> None:
    assert lines_of([b"abcdefg\rhi\n"], max_line=4) == ["abcd", "efg\r", "hi"]
    assert lines_of([b"abcdefg\rhi", b"\n"], max_line=4) == ["abcd", "efg\r", "hi"]


def test_lines_match_the_whole_stream_split_for_random_streams_and_chunkings() -> None:
    """The definition — split the whole stream on LF, strip trailing CRs, cut in
    max_line pieces — against random bytes rich in CR and LF, fed in random chunks."""
    rng = random.Random(17)
    for _ in range(2000):
        data = bytes(rng.choice(b"ab\r\n\r\xc3") for _ in range(rng.randint(0, 40)))
        max_line = rng.randint(1, 6)
        cuts = sorted(rng.sample(range(len(data) + 1), k=min(len(data) + 1, rng.randint(0, 5))))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        want = []
        parts = data.split(b"\n")
        for i, line in enumerate(parts):
            if i == len(parts) - 1 and not line:
                break  # nothing after the last newline: no line
            line = line.rstrip(b"\r")
            want += [line[at:at + max_line].decode("utf-8", errors="replace")
                     for at in range(0, max(len(line), 1), max_line)]
        assert lines_of(chunks, max_line=max_line) == want, (chunks, max_line)
