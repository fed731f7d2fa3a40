"""Black boxes (fastfp.blackbox): a real Open Inference Protocol server (KServe) serving a zoo
model, ONNX files, functions, recorded answers, and the one spec grammar (resolve)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from helpers import KSERVE_MODEL as MODEL
from helpers import free_port as _free_port
from helpers import start_kserve as _start
from helpers import stop_kserve as _stop

from fastfp import blackbox as B
from fastfp import io, zoo
from fastfp.fbi.database import query_topk

K = 3

# the KServe server: the `server` fixture of conftest.py (tests/helpers.py)


@pytest.fixture(scope="module")
def data():
    x, _ = zoo.benign_inputs(40, seed=1)
    net = zoo.load(MODEL).eval()
    with torch.no_grad():
        want = query_topk(net, x, K)
    return x, net, want


@pytest.mark.slow  # the KServe server takes ~15 s to start on 2 cores
def test_answers_equal_the_models_topk_with_batching(server, data):
    x, _, want = data
    bb = B.OpenInference(server + "/v2/models/digits", x, K, batch_size=16, backoff=0.01)
    got = bb(np.arange(40))
    assert got.dtype == np.int64 and got.shape == (40, K)
    np.testing.assert_array_equal(got, want)
    assert (bb.queries, bb.images) == (3, 40)  # 16 + 16 + 8
    np.testing.assert_array_equal(bb(5), want[5])  # one index -> (k,), from the memory
    assert bb.images == 40 and bb.report()["url"].endswith("/v2/models/digits")


@pytest.mark.slow  # the KServe server takes ~15 s to start on 2 cores
def test_int64_label_outputs_and_versioned_url_shape(server, data):
    x, _, want = data
    bb = B.OpenInference(server + "/v2/models/digits-labels", x, 2)
    np.testing.assert_array_equal(bb(np.array([3, 7, 9])), want[[3, 7, 9], :2])


@pytest.mark.slow  # the KServe server takes ~15 s to start on 2 cores
def test_cache_second_run_sends_nothing(server, data, tmp_path):
    x, _, want = data
    url, cache = server + "/v2/models/digits", tmp_path / "answers.jsonl"
    first = B.OpenInference(url, x, K, cache=cache, batch_size=8)
    first(np.arange(20))
    assert first.images == 20
    again = B.OpenInference(url, x, K, cache=cache)
    np.testing.assert_array_equal(again(np.arange(20)), want[:20])
    assert again.images == 0 and again.queries == 0 and again.report()["cached"] == 20
    smaller = B.OpenInference(url, x, 2, cache=cache)  # k = 2 is answered by the k = 3 rows
    np.testing.assert_array_equal(smaller(np.arange(20)), want[:20, :2])
    assert smaller.images == 0
    larger = B.OpenInference(url, x, 4, cache=cache)  # k = 4 needs new answers
    assert larger(np.arange(20)).shape == (20, 4) and larger.images == 20


@pytest.mark.slow  # the KServe server takes ~15 s to start on 2 cores
def test_budget_keeps_answers_already_received(server, data, tmp_path):
    x, _, want = data
    url, cache = server + "/v2/models/digits", tmp_path / "answers.jsonl"
    bb = B.OpenInference(url, x, K, cache=cache, batch_size=10, max_queries=25)
    with pytest.raises(B.BudgetExceeded, match="budget of 25 images"):
        bb(np.arange(40))
    assert bb.images == 20  # the third batch was refused before sending
    resumed = B.OpenInference(url, x, K, cache=cache, max_queries=20)
    np.testing.assert_array_equal(resumed(np.arange(40)), want)
    assert resumed.images == 20  # only the 20 not yet answered


@pytest.mark.slow  # the KServe server takes ~15 s to start on 2 cores
def test_real_replies_pass_the_strict_checks(server, data):
    x, _, want = data
    for model in ("digits", "digits-labels"):  # FP32 scores in NHWC, INT64 labels in NCHW
        bb = B.OpenInference(server + f"/v2/models/{model}", x, 2, num_classes=10)
        np.testing.assert_array_equal(bb(np.arange(40)), want[:, :2])
    # labels beyond the classes the caller knows are refused, never used
    for model in ("digits", "digits-labels"):
        few = B.OpenInference(server + f"/v2/models/{model}", x, 2, num_classes=2)
        with pytest.raises(ValueError, match=r"label \d+ .*outside 0..num_classes-1 = 0..1"):
            few(np.arange(40))


@pytest.mark.slow  # starts its own server, to stop it midway
def test_server_lost_midway_keeps_cached_answers(data, tmp_path):
    pytest.importorskip("kserve")
    x, _, want = data
    port = _free_port()
    proc = _start(port)
    url, cache = f"http://127.0.0.1:{port}/v2/models/digits", tmp_path / "answers.jsonl"
    try:
        bb = B.OpenInference(url, x, K, cache=cache, retries=1, backoff=0.01)
        bb(np.arange(10))
    finally:
        _stop(proc)
    with pytest.raises(B.ServiceUnavailable, match="after 2 attempts"):
        bb(np.arange(20))
    stored = io.read_records(cache, header=B.CACHE_HEADER)
    assert len(stored) == 10 and {r["box"] for r in stored} == {f"oip:{url}"}
    np.testing.assert_array_equal(bb(np.arange(10)), want[:10])  # still answered offline


def test_server_down_is_a_clear_error_after_retries(data):
    x, _, _ = data
    url = f"http://127.0.0.1:{_free_port()}/v2/models/digits"
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match="did not answer /v2/health/ready after 3"):
        B.OpenInference(url, x, K, retries=2, backoff=0.01, timeout=1)
    assert time.monotonic() - t0 < 5


@pytest.mark.slow  # the KServe server takes ~15 s to start on 2 cores
def test_unknown_model_names_the_url(server, data):
    x, _, _ = data
    with pytest.raises(ValueError, match="unknown or unready model"):
        B.OpenInference(server + "/v2/models/nope", x, K)


@pytest.mark.parametrize("url", ["ftp://h:1/v2/models/a", "http://h:1/v1/models/a",
                                 "http://h:1/v2/models/", "http://h:1/v2/models/a/versions/"])
def test_bad_url_rejected_before_any_network_call(url, data):
    with pytest.raises(ValueError, match="url: expected"):
        B.OpenInference(url, data[0], K)


def test_bad_arguments(data):
    x = data[0]
    url = "http://127.0.0.1:1/v2/models/a"
    with pytest.raises(ValueError, match=r"timeout: expected a number in \[0.001, inf\]"):
        B.OpenInference(url, x, K, timeout=0)
    with pytest.raises(TypeError, match="normalize: expected"):
        B.OpenInference(url, x, K, normalize=0.5)
    with pytest.raises(ValueError, match="blackbox: expected http"):
        B.resolve("model.pt", x, K)


@pytest.mark.slow  # the KServe server takes ~15 s to start on 2 cores
def test_normalize_is_applied_before_sending(server, data):
    x, net, _ = data
    with torch.no_grad():
        want = query_topk(net, (x - 0.5) / 0.25, K)
    bb = B.OpenInference(server + "/v2/models/digits", x, K, normalize=(0.5, 0.25))
    got = bb(np.arange(40))
    np.testing.assert_array_equal(got, want)
    assert (got != data[2]).any()  # the normalisation changed the answers


@pytest.mark.slow  # the KServe server takes ~15 s to start on 2 cores
def test_wrong_output_shape_names_the_url(server, data):
    bb = B.OpenInference(server + "/v2/models/digits-flat", data[0], K)
    with pytest.raises(ValueError, match="returned shape \\[40\\]"):
        bb(np.arange(4))


def test_onnx_black_box_equals_the_models_topk(data, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    x, net, want = data
    path = tmp_path / "m.onnx"
    torch.onnx.export(net, (torch.zeros(2, 1, 32, 32),), str(path), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
                      dynamo=False)
    bb = B.resolve(f"onnx:{path}", x, K, batch_size=16)
    np.testing.assert_array_equal(bb(np.arange(40)), want)
    assert bb.report()["images"] == 40
    pickle = tmp_path / "m2.onnx"
    torch.save(net.state_dict(), pickle)
    with pytest.raises(ValueError, match="is not an ONNX model"):
        B.Onnx(pickle, x, K)


def test_callable_ties_are_stable(data):
    x = data[0]
    bb = B.FunctionBlackBox(lambda b: torch.zeros(len(b), 10), x, K)
    np.testing.assert_array_equal(bb(np.arange(3)), np.tile(np.arange(K), (3, 1)))


def test_cache_shared_by_two_black_boxes_keeps_both_answers(data, tmp_path):
    # both open the cache before either has written: the second save merges, it does not
    # replace the first one's answers (it did: a lost update)
    x = data[0]
    cache = tmp_path / "answers.jsonl"
    calls = []

    def answer(b):
        calls.append(len(b))
        return torch.arange(10, dtype=torch.float32).repeat(len(b), 1)

    first = B.FunctionBlackBox(answer, x, K, cache=cache, batch_size=4)
    second = B.FunctionBlackBox(answer, x, K, cache=cache, batch_size=4)
    first(np.arange(0, 6))
    second(np.arange(6, 12))
    again = B.FunctionBlackBox(answer, x, K, cache=cache)
    before = sum(calls)
    again(np.arange(12))
    assert sum(calls) == before == 12  # all 12 answers survived: nothing asked twice
    assert again.report()["cached"] == 12


def test_corrupted_cache_is_refused(data, tmp_path):
    x = data[0]
    cache = tmp_path / "answers.jsonl"
    B.FunctionBlackBox(lambda b: torch.rand(len(b), 10), x, K, cache=cache)(np.arange(3))
    text = cache.read_text()
    at = text.index('"labels":[') + len('"labels":[')  # the first answer's first label
    cache.write_text(text[:at] + str((int(text[at]) + 1) % 10) + text[at + 1:])
    with pytest.raises(ValueError, match="cache: .* line 2: corrupt record"):
        B.FunctionBlackBox(lambda b: torch.rand(len(b), 10), x, K, cache=cache)


def _db_black_box(db, m: int, **kw) -> B.FunctionBlackBox:
    """Database model m as an image black box: image i holds the value i / N in one pixel."""
    N = db.num_inputs
    x = (torch.arange(N, dtype=torch.float32) / N).reshape(N, 1, 1, 1)
    answers = torch.from_numpy(db.topk[m])
    return B.FunctionBlackBox(lambda b: answers[(b[:, 0, 0, 0] * N).round().long()], x, db.k, **kw)


def test_open_world_sends_only_its_selected_inputs():
    from fastfp import fbi

    db = fbi.synthetic_database(4, 3, 200, num_classes=10, k=3, accuracy=0.7, noise=0.15, seed=3)
    ow = fbi.OpenWorld(L=30, trials=2, seed=1).fit(db)
    name = db.names[5]
    bb = _db_black_box(db, 5, batch_size=7)
    got = ow.detect(bb, db.families[5])
    want = ow.detect(name, db.families[5])
    assert (got.positive, got.distance) == (want.positive, want.distance)
    assert bb.images == len(got.queries) == 30 and bb.queries == 5  # ceil(30 / 7)


def test_greedy_identify_asks_one_input_at_a_time():
    from fastfp import fbi

    db = fbi.synthetic_database(4, 3, 200, num_classes=10, k=3, accuracy=0.7, noise=0.15, seed=3)
    bb = _db_black_box(db, 7)
    got = fbi.greedy_identify(db.topk, db.families, bb, seed=0)
    want = fbi.greedy_identify(db.topk, db.families, 7, seed=0)
    assert got.queries == want.queries and got.family == want.family
    assert bb.images == bb.queries == len(set(got.queries))


@pytest.mark.slow
def test_cli_decides_on_a_served_model_within_its_budget(server, tmp_path, capsys):
    from fastfp.cli.main import main

    names = ["mlp-s0", "mlp-s1", "cnn-s0", "cnn-s1"]
    spec = tmp_path / "models.json"
    spec.write_text(json.dumps({"models": [{"name": n, "family": n.split("-")[0], "zoo": n}
                                           for n in names]}))
    db = tmp_path / "db.safetensors"
    # the database keeps its inputs: the queries below need no --inputs
    assert main(["fbi", "build", "--spec", str(spec), "--inputs", "zoo:150", "--k", "3",
                 "--out", str(db)]) == 0
    url = server + "/v2/models/digits"
    rep, cache = tmp_path / "rep.json", tmp_path / "answers.jsonl"
    walled = ["fbi", "identify", "--db", str(db), "--blackbox", url, "--mode", "walled",
              "--max-queries", "20", "--cache", str(cache), "--json", str(rep)]
    assert main(walled) == 0  # adaptive: one image per greedy query
    r = json.loads(rep.read_text())
    assert r["family"] == "mlp" and r["status"] == "identified"
    assert r["sent"]["images"] == r["sent"]["requests"] == r["L"] <= 20
    assert main(walled) == 0  # a repeated identification pays nothing
    assert json.loads(rep.read_text())["sent"]["images"] == 0
    # open world: only the L deployment queries are sent, and the decision (an exit code) is
    # the one of the same model simulated from the database
    detect = ["fbi", "detect", "--db", str(db), "--family", "mlp", "--L", "30", "--trials", "3",
              "--json", str(rep)]
    served = main([*detect, "--blackbox", url, "--cache", str(tmp_path / "open.json")])
    r = json.loads(rep.read_text())
    assert r["sent"]["images"] == 30 and r["L"] == 30
    assert served == main([*detect, "--blackbox", "db:mlp-s0"])
    assert served == (0 if json.loads(rep.read_text())["positive"] else 1)
    capsys.readouterr()
    assert main([*detect, "--blackbox", url, "--no-cache", "--max-queries", "10"]) == 2
    err = capsys.readouterr().err
    assert "budget of 10 images" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1


def test_old_names_keep_working():
    import warnings

    from fastfp.fbi import blackbox as old

    assert old.OpenInference is B.OpenInference and old.resolve is B.resolve
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert old.Callable is B.FunctionBlackBox and B.Callable is B.FunctionBlackBox
    assert [w.category for w in caught] == [DeprecationWarning] * 2


def test_resolve_grammar_answers_recorded_named_and_models(data, tmp_path):
    x, net, want = data
    # answers files (any format the readers take) and recorded outputs send nothing
    np.save(tmp_path / "a.npy", want)
    torch.save(torch.from_numpy(want), tmp_path / "a.pt")
    (tmp_path / "a.json").write_text(json.dumps(want.tolist()))
    for name in ("a.npy", "a.pt", "a.json"):
        bb = B.resolve(str(tmp_path / name), None, K, num_inputs=len(x))
        assert isinstance(bb, B.Recorded) and bb.report()["images"] == 0
        np.testing.assert_array_equal(bb(np.arange(5)), want[:5])
        np.testing.assert_array_equal(bb(3), want[3])
    rec = B.resolve("db:m", None, K, recorded={"m": want}.__getitem__)
    np.testing.assert_array_equal(rec(np.array([7, 1])), want[[7, 1]])
    # a model known by name (a loader the caller gives) is asked on x, taken only now
    with pytest.raises(ValueError, match="named"):
        B.resolve(f"zoo:{MODEL}", x, K)
    bb = B.resolve(f"zoo:{MODEL}", lambda: x, K, named=lambda name: net)
    assert isinstance(bb, B.FunctionBlackBox)
    np.testing.assert_array_equal(bb(np.arange(40)), want)
    assert bb.images == 40
    # a state dict is no answers file and no model: it needs its architecture
    torch.save(net.state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match="expected one tensor"):
        B.resolve(str(tmp_path / "w.pt"), x, K)
    with pytest.raises(ValueError, match="blackbox: expected http"):
        B.resolve(str(tmp_path / "missing.onnx"), x, K)
    with pytest.raises(ValueError, match="x: the black box"):
        B.resolve(f"zoo:{MODEL}", None, K, named=lambda name: net)


def test_recorded_answers_of_exported_queries_refuse_other_inputs():
    labels = np.arange(12).reshape(6, 2)
    bb = B.Recorded(labels, 2, indices=np.array([10, 3, 7, 0, 1, 2]))
    np.testing.assert_array_equal(bb(np.array([3, 10])), labels[[1, 0]])
    with pytest.raises(ValueError, match="input 4 was not exported"):
        bb(np.array([4]))
    with pytest.raises(ValueError, match="fewer than k"):
        B.Recorded(labels, 3)
