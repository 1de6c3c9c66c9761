"""A real host for the sbctl tests (the launcher is shared with tests/python)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from switchboard_host import RunningHost, build_dir  # noqa: E402

BUILD = build_dir()
sys.path.insert(0, str(BUILD / "scripting"))

# The phone side of these tests is the Python module: one that does not import is a
# failure of the build under test, never a reason to skip.
try:
    import switchboard  # noqa: E402,F401
except ImportError as error:
    raise ImportError(f"the switchboard module in {BUILD / 'scripting'} does not import: "
                      f"{error}") from error


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    running = RunningHost(BUILD, tmp_path_factory.mktemp("host"),
                          extra_args=["--probation-seconds", "1"])
    yield running
    running.stop()


@pytest.fixture(scope="module")
def sbctl_path():
    path = BUILD / "ctl" / "sbctl"
    assert path.exists(), f"{path} is not built"
    return path
