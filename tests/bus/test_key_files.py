"""Reading CURVE key files without zmq.auth: the same keys as pyzmq's own reader."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq.auth

from bus.key_files import public_path, read_certificate, secret_path


def test_it_reads_what_pyzmq_writes_as_pyzmq_reads_it(tmp_path: Path) -> None:
    zmq.auth.create_certificates(str(tmp_path), "node1")
    for path in (public_path(tmp_path, "node1"), secret_path(tmp_path, "node1")):
        assert read_certificate(path) == zmq.auth.load_certificate(str(path))
    public, secret = read_certificate(secret_path(tmp_path, "node1"))
    assert len(public) == 40 and secret is not None and len(secret) == 40
    assert read_certificate(public_path(tmp_path, "node1"))[1] is None


@pytest.mark.parametrize("text", [
    '#   ZeroMQ CURVE\ncurve\n    public-key = "{k}"\n',
    "curve\n\tpublic-key='{k}'\n",  # other quotes and spaces, as pyzmq strips them
    'metadata\n    public-key = "not this one"\ncurve\n    public-key = "{k}"\n',
    'curve\n    public-key = "{k}"\n    secret-key = "{k}"\n    public-key = "later"\n',
])
def test_variants_read_as_pyzmq_reads_them(tmp_path: Path, text: str) -> None:
    path = tmp_path / "n.key"
    path.write_text(text.format(k="a" * 40))
    assert read_certificate(path) == zmq.auth.load_certificate(str(path))


def test_a_file_without_a_public_key_is_refused_as_pyzmq_refuses_it(tmp_path: Path) -> None:
    path = tmp_path / "n.key"
    path.write_text("curve\n")
    with pytest.raises(ValueError, match="No public key"):
        zmq.auth.load_certificate(str(path))
    with pytest.raises(ValueError, match="No public key"):
        read_certificate(path)
    with pytest.raises(OSError):
        read_certificate(tmp_path / "missing.key")
