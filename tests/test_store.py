"""Atomic writes: all or nothing, no temporaries left, the user's usual file mode."""

import os
import stat

import pytest

from fastfp import store


def test_write_replaces_whole_file(tmp_path):
    p = tmp_path / "a.json"
    store.write_json(p, {"x": 1})
    store.write_json(p, {"x": 2})
    assert p.read_text().strip().endswith("}") and '"x": 2' in p.read_text()
    assert os.listdir(tmp_path) == ["a.json"]


def test_failed_write_keeps_old_file_and_no_temporaries(tmp_path):
    p = tmp_path / "keep.txt"
    store.write_text(p, "old")
    with pytest.raises(RuntimeError):
        with store.atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["keep.txt"]


def test_mode_follows_umask(tmp_path):
    p = tmp_path / "m.bin"
    store.write_bytes(p, b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        store.write_text(tmp_path / "nope" / "x.txt", "x")
