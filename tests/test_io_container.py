"""THE sealed container of fastfp.io: one writer (pack), one reader (unpack), one seal, and a
safetensors header parser that checks every offset before making a tensor."""

import json

import numpy as np
import pytest
import torch

from fastfp import io

FMT = io.Format("fastfp.test", "2", "a test file")


def _header(blob: bytes) -> dict:
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n])


def _with_header(blob: bytes, header: dict) -> bytes:
    """``blob`` with its JSON header replaced (the tensor bytes kept)."""
    n = int.from_bytes(blob[:8], "little")
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + n:]


def test_safetensors_bytes_are_reproducible_and_readable():
    import torch
    from safetensors.torch import load

    tensors = {"b": torch.arange(5), "a": torch.rand(2, 3), "h": torch.rand(3).half(),
               "m": torch.tensor([True, False, True])}
    meta = {"z": "1", "a": "2", "m": "3"}
    blob = io.safetensors_bytes(tensors, meta)
    flipped = dict(reversed(tensors.items())), dict(reversed(meta.items()))
    assert all(io.safetensors_bytes(*flipped) == blob for _ in range(3))
    back = load(blob)
    assert set(back) == set(tensors)
    assert all(torch.equal(back[k], tensors[k]) and back[k].dtype == tensors[k].dtype
               for k in tensors)
    n = int.from_bytes(blob[:8], "little")
    header = blob[8:8 + n].decode()
    assert n % 8 == 0 and header.index('"__metadata__":{"a":"2","m":"3","z":"1"}') >= 0


def test_sealed_safetensors_see_any_changed_byte():
    import torch

    tensors = {"w": torch.arange(8.0)}
    blob = io.sealed_safetensors(tensors, {"recipe": '{"lr": 0.002}'})
    back, meta = io.read_safetensors(blob)
    assert torch.equal(back["w"], tensors["w"]) and meta == {"recipe": '{"lr": 0.002}'}
    at = blob.index(b"0.002") + 4
    for bad in (blob[:-1] + bytes([blob[-1] ^ 1]), blob[:at] + b"3" + blob[at + 1:]):
        with pytest.raises(ValueError, match="cache.st: checksum mismatch"):
            io.read_safetensors(bad, name="cache.st")
    with pytest.raises(ValueError, match="cache.st: unreadable safetensors"):
        io.read_safetensors(blob[:20], name="cache.st")
    unsealed = io.safetensors_bytes(tensors, {"a": "1"})  # files without a checksum pass
    assert io.read_safetensors(unsealed)[1] == {"a": "1"}


def test_pack_unpack_round_trip_all_dtypes_and_same_bytes():
    tensors = {"f": torch.rand(2, 3), "d": torch.rand(3, dtype=torch.float64),
               "h": torch.rand(4).half(), "b": torch.rand(5).bfloat16(),
               "i": torch.arange(6).reshape(2, 3), "u": torch.arange(7, dtype=torch.uint8),
               "m": torch.tensor([True, False]), "e": torch.zeros(0, 4),
               "n": np.arange(3, dtype=np.int16)}
    meta = {"z": [1, 2], "a": {"nested": "x"}, "f": 0.5}
    blob = io.pack(tensors, meta, format=FMT)
    assert io.pack(dict(reversed(tensors.items())), dict(reversed(meta.items())),
                   format=FMT) == blob
    back, got = io.unpack(blob, format=FMT, source="t.st")
    assert got == meta and set(back) == set(tensors)
    for k, v in tensors.items():
        v = torch.from_numpy(v) if isinstance(v, np.ndarray) else v
        assert back[k].dtype == v.dtype and torch.equal(back[k], v)
    assert set(_header(blob)["__metadata__"]) == {"format", "version", "meta", "sha256"}
    # a plain name and version work too
    assert io.unpack(io.pack({}, {}, format="x.y", version="7"), format="x.y", versions=["7"],
                     source="s")[1] == {}


def test_unpack_refuses_other_formats_versions_and_missing_or_wrong_seals():
    blob = io.pack({"w": torch.arange(4.0)}, {"k": 1}, format=FMT)
    head = _header(blob)
    meta = head["__metadata__"]
    with pytest.raises(ValueError, match=r"^t.st: not a test file \(header format is "
                                         r"'fastfp.test', expected 'other'\)$"):
        io.unpack(blob, format="other", versions=["2"], source="t.st", what="a test file")
    with pytest.raises(ValueError, match="t.st: test file of format version '2'; this fastfp "
                                         "reads version 3"):
        io.unpack(blob, format=FMT, versions=["3"], source="t.st")
    unsealed = _with_header(blob, {**head, "__metadata__": {k: v for k, v in meta.items()
                                                            if k != "sha256"}})
    with pytest.raises(ValueError, match="t.st: test file without its checksum"):
        io.unpack(unsealed, format=FMT, source="t.st")
    resealed = _with_header(blob, {**head, "__metadata__": {**meta, "sha256": "0" * 64}})
    with pytest.raises(ValueError, match=r"t.st: corrupt test file \(checksum mismatch"):
        io.unpack(resealed, format=FMT, source="t.st")
    edited = _with_header(blob, {**head, "__metadata__": {**meta, "meta": '{"k": 2}'}})
    with pytest.raises(ValueError, match="checksum mismatch"):
        io.unpack(edited, format=FMT, source="t.st")
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(ValueError, match="checksum mismatch"):
        io.unpack(flipped, format=FMT, source="t.st")
    extra = io.sealed_safetensors({"w": torch.arange(4.0)}, {**{k: v for k, v in meta.items()
                                                               if k != "sha256"}, "x": "1"})
    with pytest.raises(ValueError, match="header keys"):
        io.unpack(extra, format=FMT, source="t.st")
    with pytest.raises(TypeError, match="data: expected the bytes of a test file"):
        io.unpack("text", format=FMT)


@pytest.mark.parametrize("change, why", [
    (lambda h: {**h, "w": {**h["w"], "data_offsets": [0, 64]}}, "outside"),
    (lambda h: {**h, "w": {**h["w"], "shape": [3]}}, "bytes for shape"),
    (lambda h: {**h, "w": {**h["w"], "dtype": "X9"}}, "unknown dtype"),
    (lambda h: {**h, "w": {**h["w"], "shape": [-4]}}, "bad shape"),
    (lambda h: {**h, "v": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
     "starts at byte"),  # two tensors sharing bytes
    (lambda h: {**h, "w": {**h["w"], "extra": 1}}, "expected dtype, shape"),
    (lambda h: [1, 2], "not a JSON object"),
])
def test_the_header_is_checked_before_any_tensor_is_made(change, why):
    blob = io.pack({"w": torch.arange(4.0)}, {}, format=FMT)
    bad = _with_header(blob, change(_header(blob)))
    with pytest.raises(ValueError, match=f"t.st: not a test file \\(unreadable safetensors "
                                         f"file: .*{why}"):
        io.unpack(bad, format=FMT, source="t.st")


def test_truncation_trailing_bytes_and_duplicate_keys_are_refused():
    blob = io.pack({"w": torch.arange(4.0)}, {}, format=FMT)
    for cut in (0, 7, 8, 30, len(blob) - 1):
        with pytest.raises(ValueError, match="t.st: not a test file"):
            io.unpack(blob[:cut], format=FMT, source="t.st")
    with pytest.raises(ValueError, match="bytes of data after the last tensor"):
        io.unpack(blob + b"\0" * 8, format=FMT, source="t.st")
    n = int.from_bytes(blob[:8], "little")
    text = blob[8:8 + n].rstrip()
    entry = b'"w":' + json.dumps(_header(blob)["w"], separators=(",", ":")).encode()
    doubled = text[:-1] + b"," + entry + b"}"
    doubled += b" " * (-len(doubled) % 8)
    with pytest.raises(ValueError, match="duplicate keys"):
        io.unpack(len(doubled).to_bytes(8, "little") + doubled + blob[8 + n:], format=FMT,
                  source="t.st")


def test_pack_refuses_bad_arguments():
    with pytest.raises(TypeError, match="meta: must be JSON-serialisable"):
        io.pack({}, {"x": object()}, format=FMT)
    with pytest.raises(TypeError, match="meta: expected a dict"):
        io.pack({}, [1], format=FMT)
    with pytest.raises(TypeError, match="tensors\\['x'\\]: expected a tensor"):
        io.pack({"x": [1, 2]}, {}, format=FMT)
    with pytest.raises(ValueError, match="tensors: '__metadata__' cannot name a tensor"):
        io.pack({"__metadata__": torch.zeros(1)}, {}, format=FMT)
    with pytest.raises(TypeError, match="version: expected a non-empty string"):
        io.pack({}, {}, format="x.y")
    with pytest.raises(TypeError, match="format: expected a Format"):
        io.pack({}, {}, format=3, version="1")


def test_safetensors_of_other_writers_read_with_the_same_parser(tmp_path):
    from safetensors.torch import save

    tensors = {"a": torch.rand(2, 3), "b": torch.arange(4).to(torch.int32),
               "c": torch.rand(3).bfloat16()}
    back, meta = io.read_safetensors(save(tensors, metadata={"k": "v"}), name="w.st")
    assert meta == {"k": "v"} and all(torch.equal(back[k], tensors[k]) for k in tensors)
    with pytest.raises(ValueError, match="w.st: unreadable safetensors file"):
        io.read_safetensors(b"PK\x03\x04 not safetensors", name="w.st")
    empty = (8).to_bytes(8, "little") + b"{}      "  # no tensors: a valid, empty file
    assert io.read_safetensors(empty, name="w.st") == ({}, {})
