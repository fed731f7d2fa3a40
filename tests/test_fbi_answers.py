"""fastfp.fbi.answers: every answers / inputs format, every refusal, and the promised notes."""

import json

import numpy as np
import pytest
import torch

from fastfp.fbi.answers import as_float_images, read_answers, read_inputs, top_k_labels

LABELS = np.array([[3, 1], [0, 2], [4, 4], [1, 0]], dtype=np.int64)


def _read(path, **kw):
    kw.setdefault("num_inputs", 4)
    kw.setdefault("k", 1)
    return read_answers(path, **kw)


# --- answers: formats ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["npy", "npz", "pt"])
def test_integer_arrays(tmp_path, kind):
    p = tmp_path / f"a.{kind}"
    if kind == "npy":
        np.save(p, LABELS.astype(np.int32))
    elif kind == "npz":
        np.savez(p, predictions=LABELS)
    else:
        torch.save(torch.from_numpy(LABELS), p)
    y, notes = _read(p, k=2, num_classes=5)
    assert y.dtype == np.int64 and y.shape == (4, 2)
    np.testing.assert_array_equal(y, LABELS)
    assert notes == []


def test_one_dimensional_labels_become_one_column(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, LABELS[:, 0])
    y, _ = _read(p)
    np.testing.assert_array_equal(y, LABELS[:, :1])


def test_npz_with_several_arrays_needs_a_known_key(tmp_path):
    p = tmp_path / "a.npz"
    np.savez(p, labels=LABELS, other=np.zeros(3))
    np.testing.assert_array_equal(_read(p, k=2)[0], LABELS)
    q = tmp_path / "b.npz"
    np.savez(q, first=LABELS, second=LABELS)
    with pytest.raises(ValueError, match="name one of them"):
        _read(q)


def test_csv_plain_and_with_header_and_index(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("3,1\n0,2\n4,4\n1,0\n")
    y, notes = _read(plain, k=2)
    np.testing.assert_array_equal(y, LABELS)
    assert notes == []
    indexed = tmp_path / "indexed.csv"
    indexed.write_text("id,top1,top2\n0,3,1\n1,0,2\n\n2,4,4\n3,1,0\n")
    y, notes = _read(indexed, k=2)
    np.testing.assert_array_equal(y, LABELS)
    assert any("header row" in n for n in notes)
    assert any("index column 'id'" in n for n in notes)
    header = tmp_path / "header.csv"
    header.write_text("label\n3\n0\n4\n1\n")
    y, notes = _read(header)
    np.testing.assert_array_equal(y[:, 0], LABELS[:, 0])
    assert not any("index column" in n for n in notes)


@pytest.mark.parametrize("data", [
    LABELS.tolist(),
    {"labels": LABELS.tolist()},
    {"predictions": LABELS.tolist()},
])
def test_json_rows(tmp_path, data):
    p = tmp_path / "a.json"
    p.write_text(json.dumps(data))
    np.testing.assert_array_equal(_read(p, k=2)[0], LABELS)


def test_json_flat_list(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps([3, 0, 4, 1]))
    np.testing.assert_array_equal(_read(p)[0][:, 0], [3, 0, 4, 1])


def test_scores_take_the_top_k_with_stable_ties(tmp_path):
    scores = np.array([[0.1, 0.5, 0.5, 0.2],  # tie: class 1 before class 2
                       [0.9, 0.0, 0.05, 0.05],
                       [0.2, 0.3, 0.1, 0.4],
                       [0.25, 0.25, 0.25, 0.25]], dtype=np.float32)
    p = tmp_path / "s.npy"
    np.save(p, scores)
    y, notes = _read(p, k=2, num_classes=4)
    np.testing.assert_array_equal(y, [[1, 2], [0, 2], [3, 1], [0, 1]])
    assert any("top-2" in n and "scores" in n for n in notes)


def test_scores_without_num_classes_are_told_by_their_fractions(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("0.1,0.7,0.2\n0.6,0.3,0.1\n0.2,0.2,0.6\n0.3,0.3,0.4\n")
    y, notes = _read(p)
    np.testing.assert_array_equal(y[:, 0], [1, 0, 2, 2])
    assert notes


def test_one_hot_probabilities_with_num_classes_are_scores(tmp_path):
    p = tmp_path / "p.pt"
    torch.save(torch.eye(4)[[2, 0, 3, 1]], p)
    y, notes = _read(p, num_classes=4)
    np.testing.assert_array_equal(y[:, 0], [2, 0, 3, 1])
    assert notes


def test_integral_floats_are_labels(tmp_path):
    p = tmp_path / "f.npy"
    np.save(p, LABELS.astype(np.float64))
    y, _ = _read(p, k=2, num_classes=5)
    np.testing.assert_array_equal(y, LABELS)


def test_any_number_of_inputs_when_none(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.arange(7))
    assert read_answers(p, num_inputs=None, k=1)[0].shape == (7, 1)


def test_top_k_labels_orders_best_first():
    np.testing.assert_array_equal(top_k_labels(np.array([[1.0, 3.0, 2.0]]), 2), [[1, 2]])


# --- answers: refusals -----------------------------------------------------------------------

def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_too_few_columns_names_both_ks(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, LABELS[:, 0])
    with pytest.raises(ValueError, match=r"k' = 1 < k = 3") as exc:
        _read(p, k=3)
    assert "a.npy" in str(exc.value)


def test_wrong_number_of_rows(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.arange(5))
    with pytest.raises(ValueError, match="5 rows of answers, the database has 4 inputs"):
        _read(p)


def test_negative_and_too_large_labels(tmp_path):
    p = tmp_path / "neg.csv"
    p.write_text("1\n-1\n2\n0\n")
    with pytest.raises(ValueError, match="negative label -1"):
        _read(p)
    q = tmp_path / "big.json"
    q.write_text("[1, 7, 2, 0]")
    with pytest.raises(ValueError, match="label 7 is too large for 5 classes"):
        _read(q, num_classes=5)


@pytest.mark.parametrize("name,text,phrase", [
    ("nan.csv", "1\nnan\n2\n0\n", "NaN"),
    ("ragged.csv", "1,2\n3\n2,1\n0,1\n", "row 2 has 1 values"),
    ("word.csv", "1\n2\ncat\n0\n", "non-numeric value 'cat'"),
    ("empty.csv", "\n\n", "the file is empty"),
    ("header.csv", "label\n", "only a header row"),
    ("empty.json", "", "the file is empty"),
    ("bad.json", "[1, 2", "not valid JSON"),
    ("ragged.json", "[[1, 2], [3], [1, 1], [0, 0]]", "row 2 has 1 values"),
    ("word.json", '[1, "two", 3, 0]', "non-numeric value 'two'"),
    ("bool.json", "[1, true, 3, 0]", "non-numeric value True"),
    ("keys.json", '{"answers": [1, 2, 3, 0]}', "'labels' or 'predictions'"),
    ("scalar.json", "3", "expected a list of rows"),
    ("nothing.json", "[]", "an empty list"),
    ("fraction.json", "[0.5, 1, 2, 3]", "non-integer labels"),
])
def test_text_refusals(tmp_path, name, text, phrase):
    p = _write(tmp_path, name, text)
    with pytest.raises(ValueError, match=phrase) as exc:
        _read(p)
    assert name in str(exc.value)


def test_binary_refusals(tmp_path):
    empty = tmp_path / "e.npy"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="e.npy: the file is empty"):
        _read(empty)
    text = _write(tmp_path, "t.npy", "not numpy at all\n")
    with pytest.raises(ValueError, match="t.npy: not a valid .npy file"):
        _read(text)
    obj = tmp_path / "o.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="o.npy: not a valid .npy file"):
        _read(obj)
    pt = tmp_path / "d.pt"
    torch.save({"labels": torch.zeros(4)}, pt)
    with pytest.raises(ValueError, match="expected one tensor, got a dict"):
        _read(pt)
    junk = _write(tmp_path, "j.pt", "junk")
    with pytest.raises(ValueError, match="j.pt: not a tensor file torch can load"):
        _read(junk)
    nothing = tmp_path / "z.npy"
    np.save(nothing, np.zeros((0,), dtype=np.int64))
    with pytest.raises(ValueError, match="no answers"):
        _read(nothing)
    bools = tmp_path / "b.npy"
    np.save(bools, np.ones(4, dtype=bool))
    with pytest.raises(ValueError, match="integer labels or float scores, got bool"):
        _read(bools)
    cube = tmp_path / "c.npy"
    np.save(cube, np.zeros((4, 1, 1), dtype=np.int64))
    with pytest.raises(ValueError, match=r"got shape \(4, 1, 1\)"):
        _read(cube)


def test_scores_with_the_wrong_number_of_classes(tmp_path):
    p = tmp_path / "s.npy"
    np.save(p, np.array([[0.2, 0.3, 0.5]] * 4))
    with pytest.raises(ValueError, match="3 scores per input, the database has 10 classes"):
        _read(p, num_classes=10)


def test_infinite_scores(tmp_path):
    p = tmp_path / "s.npy"
    np.save(p, np.array([[0.2, np.inf]] * 4))
    with pytest.raises(ValueError, match="NaN or infinite"):
        _read(p, num_classes=2)


def test_bad_arguments_and_paths(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, LABELS)
    with pytest.raises(ValueError, match=r"k: expected an int in \[1, inf\]"):
        read_answers(p, num_inputs=4, k=0)
    with pytest.raises(TypeError, match="num_inputs: expected an int, got bool"):
        read_answers(p, num_inputs=True, k=1)
    with pytest.raises(ValueError, match=r"num_classes: expected an int in \[1, inf\]"):
        read_answers(p, num_inputs=4, k=1, num_classes=-2)
    with pytest.raises(TypeError, match="answers: expected a path"):
        read_answers(3, num_inputs=4, k=1)
    with pytest.raises(FileNotFoundError, match="no such file"):
        _read(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="unknown answers format '.txt'"):
        _read(_write(tmp_path, "a.txt", "1\n2\n3\n0\n"))
    with pytest.raises(ValueError, match="a folder, expected an answers file"):
        _read(tmp_path)


# --- inputs ----------------------------------------------------------------------------------

def _uint8(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_uint8_layouts_convert_to_nchw_with_a_note():
    nchw = _uint8((2, 3, 4, 5))
    x, notes = as_float_images(nchw)
    assert x.dtype == torch.float32 and x.shape == (2, 3, 4, 5)
    torch.testing.assert_close(x, torch.from_numpy(nchw).float() / 255)
    assert notes and "divided by 255" in notes[0] and "NCHW" in notes[0]
    nhwc = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))
    y, notes = as_float_images(torch.from_numpy(nhwc), name="imgs")
    torch.testing.assert_close(y, x)
    assert "imgs" in notes[0] and "NHWC" in notes[0]
    grey, notes = as_float_images(_uint8((2, 6, 7)))
    assert grey.shape == (2, 1, 6, 7) and "NHW" in notes[0]


def test_floats_in_range_pass_unchanged_without_notes():
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    y, notes = as_float_images(x)
    assert y.dtype == torch.float32 and notes == []
    torch.testing.assert_close(y, x.float())
    z, _ = as_float_images(np.full((2, 5), 1.005, dtype=np.float32))  # within the slack
    assert z.shape == (2, 5)


def test_negative_floats_are_kept_with_a_note():
    x = torch.linspace(-2.0, 2.5, 12).reshape(2, 6)  # normalised inputs or plain features
    y, notes = as_float_images(x, name="feats")
    torch.testing.assert_close(y, x)
    assert len(notes) == 1 and "feats" in notes[0] and "not 0..1" in notes[0]


def test_float_range_and_dtype_refusals():
    with pytest.raises(ValueError, match="looks like 0..255"):
        as_float_images(torch.full((2, 1, 3, 3), 200.0))
    with pytest.raises(ValueError, match="looks like 0..255"):
        as_float_images(np.full((2, 3), 1.5))
    with pytest.raises(ValueError, match="NaN or infinite"):
        as_float_images(torch.tensor([[0.5, float("nan")]]))
    with pytest.raises(TypeError, match="got torch.int64"):
        as_float_images(torch.zeros(2, 1, 3, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="got int32"):
        as_float_images(np.zeros((2, 3), dtype=np.int32))
    with pytest.raises(TypeError, match="expected a tensor or an array, got list"):
        as_float_images([[0.5]])
    with pytest.raises(ValueError, match="expected a batch of inputs"):
        as_float_images(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="uint8 images of shape"):
        as_float_images(_uint8((2, 5, 4, 6)))


@pytest.mark.parametrize("kind", ["npy", "npz", "pt"])
def test_read_inputs_tensor_files(tmp_path, kind):
    imgs = _uint8((3, 8, 8, 3))
    p = tmp_path / f"x.{kind}"
    if kind == "npy":
        np.save(p, imgs)
    elif kind == "npz":
        np.savez(p, images=imgs, labels=np.arange(3))
    else:
        torch.save(torch.from_numpy(imgs), p)
    x, notes = read_inputs(p)
    assert x.shape == (3, 3, 8, 8)
    torch.testing.assert_close(x, torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255)
    assert any("divided by 255" in n for n in notes)


def test_read_inputs_float_file_unchanged(tmp_path):
    x0 = torch.rand(4, 1, 8, 8)
    p = tmp_path / "x.pt"
    torch.save(x0, p)
    x, notes = read_inputs(p)
    torch.testing.assert_close(x, x0)
    assert notes == []


def test_read_inputs_png_folder(tmp_path):
    from PIL import Image

    imgs = _uint8((3, 6, 5, 3))
    for name, img in zip(["b.png", "a.png", "c.PNG"], imgs, strict=True):
        Image.fromarray(img).save(tmp_path / name)
    (tmp_path / "readme.txt").write_text("not an image")
    Image.fromarray(imgs[0]).convert("RGBA").save(tmp_path / "d.png")
    x, notes = read_inputs(tmp_path)
    order = [imgs[1], imgs[0], imgs[2], imgs[0]]  # a, b, c.PNG, d (b's image as RGBA)
    expected = torch.from_numpy(np.stack(order)).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(x, expected)
    assert any("4 PNG images" in n for n in notes)
    assert any("skipped 1 files" in n for n in notes)
    assert any("RGBA" in n for n in notes)
    assert any("divided by 255" in n for n in notes)


def test_read_inputs_grey_png_folder(tmp_path):
    from PIL import Image

    imgs = _uint8((2, 4, 4))
    for i, img in enumerate(imgs):
        Image.fromarray(img, mode="L").save(tmp_path / f"{i}.png")
    x, _ = read_inputs(tmp_path)
    torch.testing.assert_close(x, torch.from_numpy(imgs)[:, None].float() / 255)


def test_read_inputs_refusals(tmp_path):
    from PIL import Image

    text = tmp_path / "inputs.txt"
    text.write_text("1 2 3\n")
    with pytest.raises(ValueError, match="inputs.txt: not a tensor file") as exc:
        read_inputs(text)
    assert "\n" not in str(exc.value)
    fake = tmp_path / "fake.npy"
    fake.write_text("1 2 3\n")
    with pytest.raises(ValueError, match="fake.npy: not a valid .npy file"):
        read_inputs(fake)
    ints = tmp_path / "ints.npy"
    np.save(ints, np.zeros((2, 1, 3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="got int64"):
        read_inputs(ints)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_inputs(tmp_path / "missing.pt")
    with pytest.raises(TypeError, match="inputs: expected a path"):
        read_inputs(None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no .png files"):
        read_inputs(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(_uint8((4, 4, 3))).save(mixed / "a.png")
    Image.fromarray(_uint8((5, 4, 3))).save(mixed / "b.png")
    with pytest.raises(ValueError, match="b.png: image of shape"):
        read_inputs(mixed)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="a.png: not a readable PNG image"):
        read_inputs(broken)
