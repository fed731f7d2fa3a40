"""``fastfp verify`` on a model served over the Open Inference Protocol (the real KServe server of
conftest.py) and on the answers a remote party gives for exported images: the same decision as
the model itself, exactly the fingerprint's examples sent, within the budget, through the cache."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from helpers import KSERVE_MODEL, KSERVE_OTHER

from fastfp import Fingerprint, cexamples, zoo
from fastfp.cli.main import main

pytestmark = pytest.mark.slow  # the KServe server takes ~15 s to start on 2 cores

NUM = 30


@pytest.fixture(scope="module")
def fingerprint(tmp_path_factory):
    """An 8-bit LTRC fingerprint of the served model, with a null recorded on two unrelated zoo
    models (neither of them is served)."""
    owner = zoo.load(KSERVE_MODEL)
    negatives = [zoo.load(name) for name in ("mlp-s1", "cnn-s0")]
    fp = cexamples.generate(owner, NUM, (1, 32, 32), 10, method="ltrc", steps=40, q=3, eta=0.5,
                            quantize=8, negatives=negatives, progress=False)
    path = tmp_path_factory.mktemp("fp") / "fp.safetensors"
    fp.save(path)
    return fp, path


def one_error_line(err: str) -> bool:
    lines = err.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("fastfp verify: error: ")


def test_served_copy_is_a_copy_and_an_unrelated_model_is_not(kserve, fingerprint, tmp_path,
                                                             capsys):
    fp, path = fingerprint
    report = tmp_path / "v.json"
    before = kserve.received("digits")
    url = kserve.url + "/v2/models/digits"
    assert main(["verify", url, str(path), "--json", str(report)]) == 0
    assert kserve.received("digits") - before == NUM  # exactly the examples, each once
    v = json.loads(report.read_text())
    direct = cexamples.verdict(zoo.load(KSERVE_MODEL), fp)
    assert v["match_rate"] == direct.match_rate and v["p_value"] == direct.p_value
    assert v["null"] == "recorded" and v["null_models"] == 2 and v["rounded"] is False
    assert v["sent"]["images"] == NUM
    assert capsys.readouterr().out.strip().endswith("\nCOPY")

    before = kserve.received("other")
    assert main(["verify", kserve.url + "/v2/models/other", str(path), "--json",
                 str(report)]) == 1
    assert kserve.received("other") - before == NUM
    v = json.loads(report.read_text())
    assert v["match_rate"] == cexamples.verify(zoo.load(KSERVE_OTHER), fp)
    assert not v["is_copy"] and capsys.readouterr().out.strip().endswith("NOT A COPY")


def test_budget_is_kept_before_anything_is_sent(kserve, fingerprint, tmp_path, capsys):
    _, path = fingerprint
    before = kserve.received("digits")
    rc = main(["verify", kserve.url + "/v2/models/digits", str(path), "--max-queries",
               str(NUM - 1), "--cache", str(tmp_path / "c.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and one_error_line(err) and "budget of 29 images" in err, err
    assert kserve.received("digits") == before  # nothing sent


def test_second_verify_with_the_cache_sends_nothing(kserve, fingerprint, tmp_path, capsys):
    _, path = fingerprint
    url, cache, report = kserve.url + "/v2/models/digits", tmp_path / "c.jsonl", tmp_path / "v"
    argv = ["verify", url, str(path), "--cache", str(cache), "--max-queries", str(NUM),
            "--json", str(report)]
    before = kserve.received("digits")
    first = main(argv)
    assert kserve.received("digits") - before == NUM
    again = main(argv)
    assert again == first == 0 and kserve.received("digits") - before == NUM
    sent = json.loads(report.read_text())["sent"]
    assert sent["images"] == 0 and sent["cached"] == NUM
    # the same journal serves fbi: an answer cache of the black box, whatever asked it
    assert cache.read_text().count('"box"') == NUM


def test_exported_answers_decide_as_the_served_model(kserve, fingerprint, tmp_path, capsys):
    from PIL import Image

    fp, path = fingerprint
    out = tmp_path / "queries"
    assert main(["export", str(path), "--out", str(out)]) == 0
    queries = json.loads((out / "queries.json").read_text())
    assert "labels" not in queries and queries["count"] == NUM
    # the remote party: its model labels each PNG, one CSV row per image in the listed order
    net = zoo.load(KSERVE_MODEL).eval()
    pixels = np.stack([np.asarray(Image.open(out / f), dtype=np.float32) / 255
                       for f in queries["files"]])
    with torch.no_grad():
        labels = net(torch.from_numpy(pixels)[:, None]).argmax(1).tolist()
    answers = tmp_path / "answers.csv"
    with answers.open("w", newline="") as f:
        csv.writer(f).writerows([[y] for y in labels])
    rep_a, rep_s = tmp_path / "a.json", tmp_path / "s.json"
    rc_a = main(["verify", str(answers), str(path), "--queries", str(out / "queries.json"),
                 "--json", str(rep_a)])
    rc_s = main(["verify", kserve.url + "/v2/models/digits", str(path), "--json", str(rep_s)])
    a, s = json.loads(rep_a.read_text()), json.loads(rep_s.read_text())
    assert rc_a == rc_s == 0
    assert (a["match_rate"], a["p_value"], a["is_copy"]) == \
        (s["match_rate"], s["p_value"], s["is_copy"])


def test_no_null_is_one_line_and_chance_is_the_weakest(kserve, tmp_path, capsys):
    fp = cexamples.generate(zoo.load(KSERVE_MODEL), 8, (1, 32, 32), 10, method="vanilla",
                            steps=20, quantize=8, progress=False)
    path = tmp_path / "bare.safetensors"
    fp.save(path)
    url = kserve.url + "/v2/models/digits"
    before = kserve.received("digits")
    assert main(["verify", url, str(path)]) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and "null" in err and "--null chance" in err
    assert kserve.received("digits") == before  # refused before anything was sent
    report = tmp_path / "v.json"
    rc = main(["verify", url, str(path), "--null", "chance", "--json", str(report)])
    out = capsys.readouterr().out
    assert rc in (0, 1) and "the weakest null" in out
    v = json.loads(report.read_text())
    assert v["null"] == "chance" and v["null_rate"] == pytest.approx(0.1)


def test_a_fingerprint_that_is_not_8_bit_is_sent_rounded(kserve, tmp_path, capsys):
    fp = cexamples.generate(zoo.load(KSERVE_MODEL), 6, (1, 32, 32), 10, method="vanilla",
                            steps=10, progress=False)
    fp = Fingerprint(fp.inputs, fp.labels, {**fp.meta, "null_rate": 0.2, "null_models": 2})
    path = tmp_path / "float.safetensors"
    fp.save(path)
    report = tmp_path / "v.json"
    rc = main(["verify", kserve.url + "/v2/models/digits", str(path), "--json", str(report)])
    assert rc in (0, 1) and json.loads(report.read_text())["rounded"] is True
    assert "rounded to 8 bits" in capsys.readouterr().out
