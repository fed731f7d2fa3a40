"""``fastfp.store`` is a deprecated alias of :mod:`fastfp.io` (tests of the helpers: test_io_*)."""

import importlib
import sys

import pytest


def test_store_is_a_deprecated_alias_of_io():
    from fastfp import io

    sys.modules.pop("fastfp.store", None)
    with pytest.warns(DeprecationWarning, match="fastfp.store is deprecated: import fastfp.io"):
        store = importlib.import_module("fastfp.store")
    for name in ("atomic_path", "check_target", "read_bytes", "write_bytes", "write_text",
                 "write_json", "read_json", "lock", "LockTimeout", "append_records",
                 "read_records", "safetensors_bytes", "sealed_safetensors", "seal_matches",
                 "read_safetensors"):
        assert getattr(store, name) is getattr(io, name)
