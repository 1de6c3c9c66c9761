"""Fixtures for the packaging tests: the build under test and one `cmake --install`
of it into a temporary prefix, shared by the tests of a session."""

import pytest

from host_process import build_dir, run

BUILD = build_dir()


@pytest.fixture(scope="session")
def build():
    assert (BUILD / "host" / "switchboard").exists(), f"{BUILD} has no built host"
    return BUILD


@pytest.fixture(scope="session")
def prefix(build, tmp_path_factory):
    """A fresh `cmake --install build --prefix <tmp>`."""
    root = tmp_path_factory.mktemp("prefix")
    run(["cmake", "--install", build, "--prefix", root])
    return root
