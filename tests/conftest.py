import os

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _auto_backend(monkeypatch):
    # Tests choose a backend explicitly; never inherit one from the caller's shell.
    monkeypatch.setenv("FASTFP_BACKEND", os.environ.get("FASTFP_TEST_BACKEND", "auto"))
    yield


@pytest.fixture(scope="session")
def kserve(tmp_path_factory):
    """A real KServe server on 127.0.0.1 (tests/helpers.py), shared by the test modules that
    need one, stopped at the end of the session; skipped without kserve."""
    pytest.importorskip("kserve")
    from helpers import KServe, free_port, start_kserve, stop_kserve

    log = tmp_path_factory.mktemp("kserve") / "requests.log"
    port = free_port()
    proc = start_kserve(port, str(log))
    try:
        yield KServe(f"http://127.0.0.1:{port}", log)
    finally:
        stop_kserve(proc)


@pytest.fixture(scope="session")
def server(kserve):
    """The base URL of the shared KServe server."""
    return kserve.url
