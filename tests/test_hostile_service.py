"""A hostile Open Inference Protocol server cannot stall, starve or mislead the checker.

The server below speaks raw HTTP on 127.0.0.1 and misbehaves in one way per mode (trickled
bytes, huge bodies, redirects, 500s, NaN scores, labels out of range, malformed JSON and HTTP).
Every mode is tried through the Python API (:class:`fastfp.blackbox.OpenInference`) and through
the command line (``fastfp fbi identify / detect --blackbox URL``): each ends in one line that
names the URL, within a stated time, and the budget of images sent holds even when the server
forces retries. Every loop of the server is bounded, and each test stops its servers (threads
joined) before it returns."""

from __future__ import annotations

import contextlib
import json
import math
import re
import socketserver
import threading
import time

import numpy as np
import pytest
import torch

from fastfp import blackbox as B
from fastfp import fbi
from fastfp.cli.main import main

MODEL = "/v2/models/m"
CLASSES = 10
K = 3
TIMEOUT = 1.0  # seconds per request, given to the client
SLACK = 2.0  # what a failing request may take beyond its timeout
TRICKLE_FOR = 12.0  # how long the trickling server keeps sending (bounded)
HUGE = 64 << 20  # bytes the huge-body server offers
SECRET = "SECRET-BODY-OF-THE-REDIRECT-TARGET"


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def _response(body: bytes, status: str = "200 OK", headers: tuple[str, ...] = (),
              length: int | None = None) -> bytes:
    head = [f"HTTP/1.1 {status}", "Content-Type: application/json", "Connection: close",
            f"Content-Length: {len(body) if length is None else length}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _scores(batch: int) -> list[float]:
    # image i prefers class i % 10, then the next ones: a well-defined top-k
    return [float((c - i) % CLASSES) * -1.0 for i in range(batch) for c in range(CLASSES)]


def _output(batch: int, data, *, datatype: str = "FP32", shape=None) -> dict:
    return {"model_name": "m", "outputs": [{
        "name": "y", "datatype": datatype, "shape": [batch, CLASSES] if shape is None else shape,
        "data": data}]}


def _labels(batch: int, bad) -> dict:
    data = [[(i + j) % CLASSES for j in range(K)] for i in range(batch)]
    data[batch // 2][1] = bad
    return _output(batch, [v for row in data for v in row], datatype="INT64", shape=[batch, K])


class Server(socketserver.ThreadingTCPServer):
    """An Open Inference Protocol server on 127.0.0.1 that misbehaves as ``mode`` says (on the
    inference request, or on the metadata for the ``*_inputs`` modes). It counts the images it
    received, the connections and the bytes it managed to send."""

    daemon_threads = False
    block_on_close = True  # server_close joins every handler thread: nothing stays running

    def __init__(self, mode: str, *, target: str = "") -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode, self.target = mode, target
        self.images = self.infers = self.connections = self.sent = 0
        self.lock = threading.Lock()
        self.done = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{MODEL}"

    # ---------------------------------------------------------------------------- replies
    def reply(self, method: str, path: str, body: bytes):
        """The bytes to send (or an iterator of chunks)."""
        mode = self.mode
        if mode == "secret":  # the redirect target: must never be asked, nor its body shown
            return _response(SECRET.encode(), "404 Not Found")
        if path in ("/v2/health/ready", MODEL + "/ready"):
            return _response(_json({"ready": True}))
        if path == MODEL and method == "GET":
            inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 1, 4, 4]}]
            if mode == "dict_inputs":
                inputs = inputs[0]
            return _response(_json({"name": "m", "inputs": inputs, "outputs": [
                {"name": "y", "datatype": "FP32", "shape": [-1, CLASSES]}]}))
        if path != MODEL + "/infer" or method != "POST":
            return _response(b"{}", "404 Not Found")
        batch = int(json.loads(body)["inputs"][0]["shape"][0])
        with self.lock:
            self.infers += 1
            self.images += batch
            first = self.infers == 1
        ok = _json(_output(batch, _scores(batch)))
        if mode == "ok" or (mode == "flaky500" and not first):
            return _response(ok)
        if mode in ("error500", "flaky500"):
            return _response(b'{"error": "overloaded"}', "500 Internal Server Error")
        if mode == "trickle":
            return self._trickle(_response(ok))
        if mode == "huge_body":
            return self._huge(ok)
        if mode == "huge_length":
            return _response(ok, length=3_000_000_000)
        if mode == "short_body":
            return _response(ok[:100], length=len(ok))
        if mode == "truncated":
            return _response(ok[:ok.index(b"data") + 30])
        if mode in ("redirect_port", "redirect_scheme"):
            return _response(b"{}", "302 Found", (f"Location: {self.target}",))
        if mode == "nan":
            return _response(ok.replace(b"-1.0,", b"NaN,", 1))
        if mode == "inf":
            return _response(ok.replace(b"-1.0,", b"1e999,", 1))
        if mode == "fp32_overflow":
            return _response(ok.replace(b"-1.0,", b"1e300,", 1))
        if mode == "label_high":
            return _response(_json(_labels(batch, CLASSES)))
        if mode == "label_negative":
            return _response(_json(_labels(batch, -1)))
        if mode == "label_float":
            return _response(_json(_labels(batch, 3.5)))
        if mode == "deep":
            return _response(b"[" * 100_000 + b"]" * 100_000)
        if mode == "dict_outputs":
            out = _output(batch, _scores(batch))
            return _response(_json({"outputs": {"y": out["outputs"][0]}}))
        if mode == "inf_shape":
            return _response(ok.replace(f'"shape": [{batch}, '.encode(), b'"shape": [1e999, '))
        if mode == "bad_datatype":
            return _response(_json(_output(batch, _scores(batch), datatype="BYTES")))
        if mode == "wrong_count":
            return _response(_json(_output(batch, _scores(batch)[:-1])))
        if mode == "bad_status":
            return b"SPDY/9 two-hundred\r\nContent-Length: 2\r\n\r\n{}"
        if mode == "many_headers":
            return _response(ok, headers=tuple(f"X-Pad-{i}: {i}" for i in range(500)))
        if mode == "long_header":
            return _response(ok, headers=("X-Pad: " + "a" * 200_000,))
        raise AssertionError(mode)

    def _trickle(self, data: bytes):
        # one byte every 50 ms, for at most TRICKLE_FOR seconds: no read ever waits long
        end = time.monotonic() + TRICKLE_FOR
        for i in range(len(data)):
            if time.monotonic() > end or self.done.wait(0.05):
                return
            yield data[i:i + 1]

    def _huge(self, ok: bytes):
        # a valid reply padded with a HUGE string, no Content-Length: read until closed
        yield b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
        yield ok[:-1] + b', "pad": "'
        chunk = b"x" * (1 << 20)
        for _ in range(HUGE // len(chunk)):
            if self.done.is_set():
                return
            yield chunk
        yield b'"}'


class Handler(socketserver.StreamRequestHandler):
    timeout = 5  # a client that sends nothing does not hold the thread

    def handle(self) -> None:
        srv = self.server
        with srv.lock:
            srv.connections += 1
        if srv.mode == "listener":  # counts connections (an ftp:// redirect target)
            return
        try:
            method, path = self.rfile.readline(65537).decode("latin-1").split()[:2]
            length = 0
            for _ in range(200):
                line = self.rfile.readline(65537)
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = self.rfile.read(length) if length else b""
            reply = srv.reply(method, path, body)
            for chunk in [reply] if isinstance(reply, bytes) else reply:
                self.wfile.write(chunk)
                with srv.lock:
                    srv.sent += len(chunk)
        except (OSError, ValueError):
            return  # the client went away


@contextlib.contextmanager
def serve(mode: str, **kw):
    srv = Server(mode, **kw)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.done.set()
        srv.shutdown()
        srv.server_close()  # joins the handler threads
        thread.join(10)
        assert not thread.is_alive()


@contextlib.contextmanager
def hostile(mode: str):
    """The server of ``mode``, with the redirect targets it needs (each counting visits)."""
    with serve("secret") as secret, serve("listener") as listener:
        target = {"redirect_port": secret.url + "/infer",
                  "redirect_scheme": f"ftp://127.0.0.1:{listener.server_address[1]}/x"}
        with serve(mode, target=target.get(mode, "")) as srv:
            yield srv
        assert secret.connections == 0 and listener.connections == 0, "a redirect was followed"


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(120, 1, 4, 4, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def db_path(x, tmp_path_factory):
    db = fbi.synthetic_database(3, 3, 120, num_classes=CLASSES, k=K, seed=0).with_inputs(x)
    path = tmp_path_factory.mktemp("hostile") / "db.safetensors"
    db.save(path)
    return path


# mode -> what the one line must say (besides the URL)
MODES = {
    "trickle": r"did not answer .*/infer",
    "huge_body": r"body: more than \d+ bytes",
    "huge_length": r"Content-Length: 3000000000 bytes, more than",
    "short_body": r"body: \d+ of \d+ bytes",
    "truncated": r"not JSON",
    "redirect_port": r"redirect \(HTTP 302\)",
    "redirect_scheme": r"redirect \(HTTP 302\)",
    "nan": r"outputs\[0\]\.data: NaN",
    "inf": r"outputs\[0\]\.data: inf",
    "fp32_overflow": r"outputs\[0\]\.data: .*outside the FP32 range",
    "label_high": r"outputs\[0\]\.data: label 10 .*0\.\.9",
    "label_negative": r"outputs\[0\]\.data: label -1 .*0\.\.9",
    "label_float": r"outputs\[0\]\.data: expected integer labels",
    "deep": r"nested deeper than",
    "dict_inputs": r"inputs: expected a list",
    "dict_outputs": r"outputs: expected a list",
    "inf_shape": r"outputs\[0\]\.shape",
    "bad_datatype": r"outputs\[0\]\.datatype: 'BYTES'",
    "wrong_count": r"outputs\[0\]\.data: 299 values",
    "bad_status": r"status line",
    "many_headers": r"headers: more than",
    "long_header": r"header.* more than",
}


def _one_line(text: str, url: str) -> None:
    assert "\n" not in text.strip() and "Traceback" not in text, text
    assert url in text and SECRET not in text, text


@pytest.mark.parametrize("mode", sorted(MODES))
def test_api_refuses_in_one_line(mode, x):
    with hostile(mode) as srv:
        t0 = time.monotonic()
        with pytest.raises((ValueError, ConnectionError)) as info:
            bb = B.OpenInference(srv.url, x, K, num_classes=CLASSES, timeout=TIMEOUT,
                                 retries=2, backoff=0.01)
            bb(np.arange(30))
        took = time.monotonic() - t0
    _one_line(str(info.value), srv.url)
    assert took < TIMEOUT + SLACK, f"{mode}: took {took:.1f} s"
    assert re.search(MODES[mode], str(info.value)), str(info.value)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_cli_refuses_in_one_line(mode, db_path, capsys):
    command = "detect" if sorted(MODES).index(mode) % 2 else "identify"
    args = ["fbi", command, "--db", str(db_path), "--L", "30", "--trials", "3", "--no-cache",
            "--timeout", str(TIMEOUT)]
    if command == "detect":
        args += ["--family", "f0"]
    with hostile(mode) as srv:
        capsys.readouterr()
        t0 = time.monotonic()
        code = main([*args, "--blackbox", srv.url])
        took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1, err
    _one_line(lines[0], srv.url)
    assert "Traceback" not in err and SECRET not in err
    # the CLI's own work (loading the database, fitting the open world) comes on top
    assert took < TIMEOUT + SLACK + 3, f"{mode}: took {took:.1f} s"


def test_trickle_ends_at_the_deadline_not_per_read(x):
    # each byte comes well within the timeout, so a timeout per read never fires
    with hostile("trickle") as srv:
        bb = B.OpenInference(srv.url, x, K, timeout=TIMEOUT, retries=3, backoff=0.01)
        t0 = time.monotonic()
        with pytest.raises(B.ServiceUnavailable, match=r"within 1 s"):
            bb(np.arange(8))
        assert time.monotonic() - t0 < TIMEOUT + SLACK
    assert srv.infers == 1  # the deadline covers the retries too: no time left for one


def test_huge_body_is_not_read_to_the_end(x):
    with hostile("huge_body") as srv:
        bb = B.OpenInference(srv.url, x, K, timeout=5)
        with pytest.raises(B.BadReply, match="more than"):
            bb(np.arange(30))
    # the client stopped reading at its cap (a few MB, plus what the sockets buffer)
    assert srv.sent < HUGE // 2


def test_retries_never_exceed_the_budget(x):
    with hostile("error500") as srv:
        bb = B.OpenInference(srv.url, x, K, max_queries=40, retries=3, backoff=0.01)
        with pytest.raises(B.BudgetExceeded, match="budget of 40 images"):
            bb(np.arange(30))
    assert srv.images == bb.images == 30 <= 40  # the retry would have sent 60
    assert "\n" not in str(bb.report())


def test_a_retry_counts_again_and_may_succeed(x):
    with hostile("flaky500") as srv:
        bb = B.OpenInference(srv.url, x, K, max_queries=60, backoff=0.01)
        got = bb(np.arange(30))
    assert srv.images == bb.images == 60 and bb.queries == 2
    want = np.array([[i % CLASSES, (i + 1) % CLASSES, (i + 2) % CLASSES] for i in range(30)])
    np.testing.assert_array_equal(got, want)


def test_cli_budget_counts_what_was_sent(db_path, capsys):
    with hostile("error500") as srv:
        code = main(["fbi", "detect", "--db", str(db_path), "--family", "f0", "--L", "30",
                     "--trials", "3", "--no-cache", "--max-queries", "40", "--blackbox",
                     srv.url])
    err = capsys.readouterr().err
    assert code == 2 and "budget of 40 images" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1
    assert srv.images <= 40


def test_the_server_answering_well_still_works(x, db_path, capsys):
    with hostile("ok") as srv:
        bb = B.OpenInference(srv.url, x, K, num_classes=CLASSES, batch_size=7)
        got = bb(np.arange(20))
        assert bb.images == srv.images == 20 and bb.queries == 3
        code = main(["fbi", "identify", "--db", str(db_path), "--L", "30", "--trials", "3",
                     "--no-cache", "--blackbox", srv.url])
    assert code in (0, 1), capsys.readouterr().err
    assert got[:, 0].tolist() == [i % 7 for i in range(20)]  # i-th image of its batch of 7


# ------------------------------------------------------------------ local black boxes too
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_function_black_box_refuses_non_finite_scores(bad, x):
    def scores(b):
        s = torch.zeros(len(b), CLASSES)
        s[-1, 3] = bad
        return s

    with pytest.raises(ValueError, match=r"callable:.*scores: non-finite score"):
        B.FunctionBlackBox(scores, x, K)(np.arange(4))


def test_function_black_box_refuses_labels_out_of_range(x):
    def labels(value):
        return lambda b: torch.full((len(b), K), value, dtype=torch.int64)

    with pytest.raises(ValueError, match=r"label -1 .*0\.\.num_classes-1"):
        B.FunctionBlackBox(labels(-1), x, K)(np.arange(4))
    with pytest.raises(ValueError, match=r"label 10 .*0\.\.9"):
        B.FunctionBlackBox(labels(10), x, K, num_classes=CLASSES)(np.arange(4))
    with pytest.raises(ValueError, match=r"label 12 .*0\.\.9"):  # scores of 13 classes
        B.FunctionBlackBox(lambda b: torch.eye(13)[12].repeat(len(b), 1), x, K,
                           num_classes=CLASSES)(np.arange(4))
    ok = B.FunctionBlackBox(labels(9), x, K, num_classes=CLASSES)(np.arange(4))
    assert (ok == 9).all()


def _nan_onnx(path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((16, CLASSES), np.nan, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])],
        "nan", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", CLASSES])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_onnx_nan_model_is_refused_not_argmaxed(x, db_path, tmp_path, capsys):
    path = tmp_path / "nan.onnx"
    _nan_onnx(path)
    with pytest.raises(ValueError, match="non-finite"):
        B.Onnx(path, x, K)(np.arange(4))
    code = main(["fbi", "identify", "--db", str(db_path), "--L", "30", "--trials", "3",
                 "--blackbox", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "non-finite" in err and "Traceback" not in err
