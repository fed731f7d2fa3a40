"""Files of fastfp 0.1.0: shards refused with the convert line, and ``fastfp convert`` itself
(fingerprints: test_fingerprint.py; databases: test_fbi_database_files.py)."""

import json

import pytest
import torch

from fastfp import distributed as dd
from fastfp import io
from fastfp.cli.main import main


def _legacy_shard(shards, item, tensors, meta):
    """A shard as fastfp 0.1.0 wrote it: no format or version, its seal over the header."""
    header = {"settings_hash": shards.digest, "item": str(item),
              "meta": json.dumps(meta, sort_keys=True)}
    shards.shard_path(item).write_bytes(io.sealed_safetensors(tensors, header))
    return shards.shard_path(item)


def test_a_0_1_0_shard_is_refused_then_converts(tmp_path):
    shards = dd.ShardStore(tmp_path, {"a": 1}, 2, dd.Context()).open()
    y = torch.arange(6.0)
    path = _legacy_shard(shards, 1, {"y": y}, {"steps": [1, 2]})
    with pytest.raises(io.LegacyFileError, match=f"convert it with `fastfp convert {path}`"):
        shards.load(1)
    done = io.convert_legacy(path)
    assert done.checked and done.format == "fastfp.shard" and done.out == path
    tensors, meta = shards.load(1)
    assert torch.equal(tensors["y"], y) and meta == {"steps": [1, 2]}


def test_convert_command_reports_and_refuses_one_line(tmp_path, capsys):
    from safetensors.torch import save_file

    old = tmp_path / "old.safetensors"
    x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 1])
    save_file({"inputs": x, "labels": y}, str(old),
              metadata={"format": "fastfp.fingerprint", "version": "1", "meta": "{}"})
    rep = tmp_path / "rep.json"
    assert main(["convert", str(old), "--json", str(rep)]) == 0
    out = capsys.readouterr().out
    assert "no checksum to verify" in out and "fastfp.fingerprint format version 2" in out
    assert json.loads(rep.read_text()) == {"path": str(old), "out": str(old),
                                           "format": "fastfp.fingerprint", "version": "2",
                                           "checked": False}
    foreign = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    cases = [([str(foreign)], "not a file of fastfp 0.1.0"),
             ([str(text)], "unreadable safetensors file"),
             ([str(tmp_path / "nope")], "does not exist"),
             ([str(old), "--out", str(tmp_path / "no" / "x")], "does not exist")]
    for argv, why in cases:
        assert main(["convert", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err and "Traceback" not in err
    with pytest.raises(TypeError, match="path: expected a file path"):
        io.convert_legacy(None)
