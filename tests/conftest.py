"""Fixtures shared by every test folder.

The InfluxDB fixtures live in ``tests/conftest_influx.py``; they are loaded as
a plugin only when that file exists, so collection works while it does not.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_ROOT = ROOT / "test-output"

#: Log files of the processes a test started, attached to its report if it fails
#: (the hook is in tests/integration/conftest.py).
LOGS_KEY = pytest.StashKey[list[Path]]()

if (Path(__file__).parent / "conftest_influx.py").exists():
    pytest_plugins = ["tests.conftest_influx"]


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """``test-output/<test name>/``: files a test keeps for people to look at afterwards."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_") or "test"
    path = OUTPUT_ROOT / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def module_logs() -> list[Path]:
    """Log files of the processes a module-scoped cluster starts."""
    return []


@pytest.fixture
def attach_module_logs(request: pytest.FixtureRequest, module_logs: list[Path]) -> None:
    """Attach ``module_logs`` to each test's report if it fails; a module using a
    module-scoped cluster imports both fixtures and marks itself with
    ``pytest.mark.usefixtures("attach_module_logs")``."""
    request.node.stash[LOGS_KEY] = module_logs


@pytest.fixture
def checkout_reachable_by_others() -> Iterator[None]:
    """Let another local user reach this checkout's code and venv for one test.

    A test that runs ptap as another user (``setpriv``) needs every folder above
    the checkout to be searchable by others; a clone made in ``mktemp -d`` (0700)
    is not. Folders lacking ``o+x`` get it for the test and their modes back after.
    """
    changed: list[tuple[Path, int]] = []
    try:
        for folder in [ROOT, *ROOT.parents]:
            mode = folder.stat().st_mode
            if not mode & stat.S_IXOTH:
                folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
                changed.append((folder, stat.S_IMODE(mode)))
        yield
    finally:
        for folder, mode in reversed(changed):
            folder.chmod(mode)
