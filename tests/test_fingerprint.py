"""Fingerprint files: exact round trip, atomic writes, and clear errors for anything else."""

import json
import os

import pytest
import torch
from helpers import rewrite_safetensors_metadata

from fastfp import Fingerprint


def make(num=5, shape=(3, 7, 9), seed=0, meta=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((num, *shape), generator=g)
    y = torch.randint(0, 10, (num,), generator=g)
    return Fingerprint(x, y, meta if meta is not None else
                       {"method": "ltrc", "k": 2, "steps_used": list(range(num)),
                        "final_loss": [1e-7] * num, "nested": {"a": [1, 2]}})


def test_round_trip_is_exact(tmp_path):
    fp = make()
    path = fp.save(tmp_path / "fp.safetensors")
    back = Fingerprint.load(path)
    assert torch.equal(back.inputs, fp.inputs) and back.inputs.dtype == torch.float32
    assert torch.equal(back.labels, fp.labels) and back.labels.dtype == torch.int64
    assert back.meta == fp.meta
    assert len(back) == 5 and "ltrc" in repr(back)


def test_constructor_normalises_device_dtype_and_layout():
    x = torch.rand(4, 2, 5, 3, dtype=torch.float64).transpose(2, 3)
    fp = Fingerprint(x, torch.tensor([1, 2, 3, 4], dtype=torch.int32))
    assert fp.inputs.dtype == torch.float32 and fp.inputs.is_contiguous()
    assert fp.labels.dtype == torch.int64
    assert torch.allclose(fp.inputs, x.float())


def test_save_is_atomic_and_leaves_no_temporaries(tmp_path, monkeypatch):
    path = tmp_path / "fp.safetensors"
    make(seed=1).save(path)
    before = path.read_bytes()

    # A save that dies half-way must leave the old file intact and no temporary behind.
    import fastfp.fingerprint as mod

    def boom(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(mod.Fingerprint, "to_bytes", boom)
    with pytest.raises(KeyboardInterrupt):
        make(seed=2).save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["fp.safetensors"]
    monkeypatch.undo()

    # Interrupted after the new bytes are written, before they are renamed into place: a save
    # that wrote to ``path`` directly would have replaced the old file by now.
    with monkeypatch.context() as m:
        m.setattr(os, "replace", lambda *a, **k: boom(None))
        with pytest.raises(KeyboardInterrupt):
            make(seed=2).save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["fp.safetensors"]
    assert torch.equal(Fingerprint.load(path).inputs, make(seed=1).inputs)


def test_truncated_file_raises_value_error(tmp_path):
    path = make().save(tmp_path / "fp.safetensors")
    data = path.read_bytes()
    for cut in (0, 4, 8, 20, len(data) // 2, len(data) - 1):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a fastfp fingerprint"):
            Fingerprint.load(bad)


def test_corrupt_header_raises_value_error(tmp_path):
    path = make().save(tmp_path / "fp.safetensors")
    data = bytearray(path.read_bytes())
    data[12] ^= 0xFF  # inside the JSON header
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not a fastfp fingerprint"):
        Fingerprint.load(bad)


def test_corrupt_tensor_data_raises_value_error(tmp_path):
    """A flipped bit in the tensor data keeps the layout valid, so only the checksum sees it."""
    path = make().save(tmp_path / "fp.safetensors")
    data = path.read_bytes()
    start = 8 + int.from_bytes(data[:8], "little")  # first byte after the JSON header
    for at in (start, start + 7, (start + len(data)) // 2, len(data) - 1):
        bad = bytearray(data)
        bad[at] ^= 0x10
        (tmp_path / "bad.safetensors").write_bytes(bytes(bad))
        with pytest.raises(ValueError, match="checksum"):
            Fingerprint.load(tmp_path / "bad.safetensors")


def _legacy(path, x, y, meta='{"method": "rc"}', digest=True):
    """A fingerprint as fastfp 0.1.0 wrote it: format version 1, the SHA-256 of the tensor bytes
    only (or, the oldest files, no checksum)."""
    import hashlib

    from safetensors.torch import save_file

    header = {"format": "fastfp.fingerprint", "version": "1", "meta": meta}
    if digest:
        header["sha256"] = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()
    save_file({"inputs": x, "labels": y}, str(path), metadata=header)
    return path


def _refused_as_legacy(path):
    line = (f"{path}: written by fastfp 0.1.0 (format version 1); convert it with "
            f"`fastfp convert {path}`")
    with pytest.raises(ValueError) as info:
        Fingerprint.load(path)
    assert str(info.value) == line
    return line


def test_version_1_files_without_checksum_are_refused_then_convert(tmp_path):
    from fastfp import io

    x, y = torch.rand(2, 1, 3, 3), torch.tensor([1, 0])
    old = _legacy(tmp_path / "old.safetensors", x, y, digest=False)
    _refused_as_legacy(old)
    done = io.convert_legacy(old)  # in place
    assert done.out == old and not done.checked
    fp = Fingerprint.load(old)
    assert torch.equal(fp.inputs, x) and fp.meta == {"method": "rc"}


def test_foreign_files_raise_value_error(tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"inputs": torch.zeros(1, 1, 2, 2), "labels": torch.zeros(1, dtype=torch.int64)},
              str(plain))
    with pytest.raises(ValueError, match="format"):
        Fingerprint.load(plain)

    from fastfp import io

    header = {"format": "fastfp.fingerprint", "version": "2", "meta": "{}"}
    extra = tmp_path / "extra.safetensors"  # sealed, of the right format, with a third tensor
    extra.write_bytes(io.pack({"inputs": torch.zeros(1, 1, 2, 2),
                               "labels": torch.zeros(1, dtype=torch.int64),
                               "weights": torch.zeros(3)}, {}, format=io.FINGERPRINT))
    with pytest.raises(ValueError, match="expected tensors"):
        Fingerprint.load(extra)

    wrong = tmp_path / "wrong.safetensors"
    wrong.write_bytes(io.pack({"inputs": torch.zeros(2, 1, 2, 2),
                               "labels": torch.zeros(3, dtype=torch.int64)}, {},
                              format=io.FINGERPRINT))
    with pytest.raises(ValueError, match="labels must be int64"):
        Fingerprint.load(wrong)

    future = tmp_path / "future.safetensors"
    save_file({"inputs": torch.zeros(1, 1, 2, 2), "labels": torch.zeros(1, dtype=torch.int64)},
              str(future), metadata={**header, "version": "99"})
    with pytest.raises(ValueError, match="version"):
        Fingerprint.load(future)

    text = tmp_path / "fp.json"
    text.write_text(json.dumps({"inputs": [1, 2]}))
    with pytest.raises(ValueError, match="not a fastfp fingerprint"):
        Fingerprint.load(text)


def test_missing_and_directory_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="path: "):
        Fingerprint.load(tmp_path / "nope.safetensors")
    with pytest.raises(IsADirectoryError, match="path: "):
        Fingerprint.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="folder"):
        make().save(tmp_path / "no" / "such" / "dir.safetensors")


@pytest.mark.parametrize("inputs, labels, meta, exc, name", [
    ([1.0], torch.zeros(1, dtype=torch.int64), None, TypeError, "inputs"),
    (torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.int64), None, ValueError, "inputs"),
    (torch.zeros(2, 1, 3, 4, dtype=torch.int64), torch.zeros(2, dtype=torch.int64), None,
     TypeError, "inputs"),
    (torch.zeros(2, 1, 3, 4), torch.zeros(3, dtype=torch.int64), None, ValueError, "labels"),
    (torch.zeros(2, 1, 3, 4), torch.zeros(2), None, TypeError, "labels"),
    (torch.zeros(2, 1, 3, 4), torch.tensor([0, -1]), None, ValueError, "labels"),
    (torch.zeros(2, 1, 3, 4), torch.zeros(2, dtype=torch.int64), [1], TypeError, "meta"),
    (torch.zeros(2, 1, 3, 4), torch.zeros(2, dtype=torch.int64), {"x": object()}, TypeError,
     "meta"),
])
def test_bad_construction(inputs, labels, meta, exc, name):
    with pytest.raises(exc, match=name):
        Fingerprint(inputs, labels, meta)


def _header(data: bytes) -> tuple[int, str]:
    n = int.from_bytes(data[:8], "little")
    return n, data[8:8 + n].decode()


def test_checksum_covers_the_metadata(tmp_path):
    """A flipped digit in the JSON meta keeps the header valid: only the checksum sees it."""
    path = make(meta={"method": "ltrc", "k": 2, "delta": 0.03}).save(tmp_path / "fp.safetensors")
    data = path.read_bytes()
    _, header = _header(data)
    at = 8 + header.index('\\"k\\": 2') + len('\\"k\\": ')
    assert data[at:at + 1] == b"2"
    bad = data[:at] + b"3" + data[at + 1:]
    (tmp_path / "bad.safetensors").write_bytes(bad)
    with pytest.raises(ValueError, match="checksum mismatch"):
        Fingerprint.load(tmp_path / "bad.safetensors")


def test_same_fingerprint_same_bytes(tmp_path):
    blobs = {make(seed=3).to_bytes() for _ in range(6)}
    assert len(blobs) == 1
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    make(seed=3).save(a)
    make(seed=3).save(b)
    assert a.read_bytes() == b.read_bytes() == blobs.pop()
    _, header = _header(a.read_bytes())
    meta = json.loads(header)["__metadata__"]
    assert list(meta) == sorted(meta) and meta["version"] == "2"


def test_version_1_files_are_refused_by_load_and_verify_and_convert_exactly(tmp_path, capsys):
    from fastfp import io
    from fastfp.cli.main import main

    x, y = torch.rand(3, 1, 3, 3), torch.tensor([1, 0, 2])
    meta = {"method": "ltrc", "k": 2, "nested": {"a": [1, 2]}}
    old = _legacy(tmp_path / "old.safetensors", x, y, meta=json.dumps(meta))
    line = _refused_as_legacy(old)
    capsys.readouterr()
    assert main(["verify", "cnn-s0", str(old)]) == 2  # refused before the suspect is loaded
    assert capsys.readouterr().err == f"fastfp verify: error: {line}\n"
    new = tmp_path / "new.safetensors"
    assert main(["convert", str(old), "--out", str(new)]) == 0
    assert "old checksum verified" in capsys.readouterr().out
    fp = Fingerprint.load(new)
    assert torch.equal(fp.inputs, x) and torch.equal(fp.labels, y) and fp.meta == meta
    assert new.read_bytes() == Fingerprint(x, y, meta).to_bytes()
    assert main(["convert", str(old), "--out", str(new)]) == 2  # never over another file
    assert "exists" in capsys.readouterr().err
    assert main(["convert", str(new)]) == 2  # a current file: nothing to convert
    assert "nothing to convert" in capsys.readouterr().err
    # the old checksum is checked: other tensor bytes under the same header are refused
    tampered = _legacy(tmp_path / "t.safetensors", x, y)
    data = tampered.read_bytes()
    tampered.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ValueError, match="checksum mismatch"):
        io.convert_legacy(tampered, tmp_path / "t2.safetensors")
    assert not (tmp_path / "t2.safetensors").exists()


_rewritten = rewrite_safetensors_metadata


def test_a_removed_or_downgraded_seal_is_refused(tmp_path):
    from fastfp import io

    path = make().save(tmp_path / "fp.safetensors")
    _rewritten(path, lambda m: {k: v for k, v in m.items() if k != "sha256"})
    with pytest.raises(ValueError, match=f"{path}: fastfp fingerprint without its checksum"):
        Fingerprint.load(path)
    # rewritten as version 1, its checksum (now not a valid version 1 one) kept
    path = make().save(tmp_path / "fp.safetensors")
    _rewritten(path, lambda m: {**m, "version": "1"})
    _refused_as_legacy(path)
    with pytest.raises(ValueError, match="checksum mismatch"):
        io.convert_legacy(path, tmp_path / "out.safetensors")


@pytest.mark.skipif(os.name != "posix", reason="FIFOs and device nodes as on POSIX")
def test_load_refuses_non_regular_files_and_non_paths(tmp_path):
    import signal

    def boom(*_):
        raise TimeoutError("blocked reading a non-regular file")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(10)
    try:
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        with pytest.raises(ValueError, match="FIFO, not a regular file"):
            Fingerprint.load(fifo)
        with pytest.raises(ValueError, match="device node, not a regular file"):
            Fingerprint.load("/dev/zero")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    for bad in (None, 3, ["fp.safetensors"]):
        with pytest.raises(TypeError, match="path: expected a file path"):
            Fingerprint.load(bad)
    with pytest.raises(TypeError, match="path: expected a file path"):
        make().save(None)
    with pytest.raises(TypeError, match="data: expected the bytes"):
        Fingerprint.from_bytes("not bytes")
