"""Models and constants shared by the test modules (tests never import each other)."""

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

METHODS = ("vanilla", "rc", "rcgm", "ltrc")


def tiny_cnn(in_ch=1, num_classes=5, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(in_ch, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(64, num_classes))


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 8 * 8, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.fc(x.flatten(1))


@functools.cache
def digits_cnn():
    """A small CNN trained on scikit-learn's real handwritten digits, 8x8 upsampled to 32x32
    (a few seconds on CPU); returns (model, held-out accuracy)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)
    y = torch.tensor(d.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    test, train = perm[:300], perm[300:]
    torch.manual_seed(0)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _epoch in range(4):
        for b in torch.randperm(len(train), generator=g).split(64):
            idx = train[b]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    model.zero_grad(set_to_none=True)
    return model, acc


class TupleModel(nn.Module):
    """A model returning (logits, features) for 1x4x4 inputs: not a classifier fastfp can score."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        out = self.fc(x)
        return out, out


def write_release_folder(folder, seed=0, num_inputs=600, num_classes=10):
    """A small folder in the FBI authors' release layout: ``<name>.npy`` (N,) top-1 labels per
    model, ``ground_truth.npy``; ``FAMILY`` is a vanilla model, ``VARIANT-FAMILY-PARAM`` a variant.

    Six families (alpha .. zeta) of a vanilla model and five variants: ``HALF`` (an exact copy:
    a tie with the vanilla model at the close end), ``JPEG-50`` (10 % of the answers redrawn),
    ``JPEG-30`` (5 % redrawn, then 15 % swapped as below), ``PRUNE-40`` (40 % of the right and
    as many wrong answers swapped: same accuracy, the far end), ``POST-2`` (accuracy down 30 %:
    removed by the 15 % relative filter). ``omega``'s two variants both lose more than 15 %:
    it ends with one member and the authors' detection removes it. Returns a dict with the
    folder, the family names and the expected facts.
    """
    from pathlib import Path

    import numpy as np

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    N, C = num_inputs, num_classes
    truth = rng.integers(C, size=N)

    def wrong_label(i):
        return (truth[i] + 1 + rng.integers(C - 1)) % C

    def vanilla(acc):
        out = truth.copy()
        for i in np.flatnonzero(rng.random(N) > acc):
            out[i] = wrong_label(i)
        return out

    def redraw(base, frac):
        out = base.copy()
        for i in np.flatnonzero(rng.random(N) < frac):
            out[i] = rng.integers(C)
        return out

    def swap(base, frac):  # as many right answers made wrong as wrong ones made right
        out = base.copy()
        right, wrong = np.flatnonzero(base == truth), np.flatnonzero(base != truth)
        n = min(int(frac * right.size), wrong.size)
        for i in rng.choice(right, n, replace=False):
            out[i] = wrong_label(i)
        fixed = rng.choice(wrong, n, replace=False)
        out[fixed] = truth[fixed]
        return out

    def degrade(base, drop):  # accuracy down by ``drop`` (relative)
        out = base.copy()
        right = np.flatnonzero(base == truth)
        for i in rng.choice(right, int(drop * right.size), replace=False):
            out[i] = wrong_label(i)
        return out

    models = {}
    families = ["alpha", "beta", "gamma", "delta", "eps", "zeta"]
    for j, f in enumerate(families):
        v = vanilla(0.6 + 0.05 * j)
        models[f] = v
        models[f"HALF-{f}"] = v.copy()
        models[f"JPEG-{f}-50"] = redraw(v, 0.10)
        models[f"JPEG-{f}-30"] = swap(redraw(v, 0.05), 0.15)
        models[f"PRUNE-{f}-40"] = swap(v, 0.4)
        models[f"POST-{f}-2"] = degrade(v, 0.3)
    v = vanilla(0.7)
    models["omega"] = v
    models["JPEG-omega-10"] = degrade(v, 0.25)
    models["POST-omega-1"] = degrade(v, 0.4)
    for name, labels in models.items():
        np.save(folder / f"{name}.npy", labels.astype(np.int64))
    np.save(folder / "ground_truth.npy", truth.astype(np.int64))
    return {"folder": folder, "families": families + ["omega"], "removed": "omega",
            "filtered": [n for n in models if n.startswith("POST-") or n == "JPEG-omega-10"],
            "ties": [(f, f"HALF-{f}") for f in families]}


# --- a real Open Inference Protocol server (KServe) on 127.0.0.1 -------------------------------

KSERVE_MODEL = "mlp-s0"  # served as "digits", "digits-labels" and "digits-flat"
KSERVE_OTHER = "cnn-s1"  # served as "other": a model unrelated to KSERVE_MODEL

# The served models: "digits" answers FP32 scores (B, 10) in NHWC; "digits-labels" INT64 top-3
# labels in NCHW; "digits-flat" a malformed 1-D output; "other" FP32 scores of another model in
# NCHW. "digits" declares NHWC so that the client must take the layout from the metadata. Every
# request appends "MODEL IMAGES" to the log file (argv[4]), so tests count what was received.
KSERVE_SERVER = r"""
import sys, numpy as np, torch
from kserve import Model, ModelServer, InferResponse, InferOutput
from fastfp import zoo
net, other = zoo.load(sys.argv[2]).eval(), zoo.load(sys.argv[3]).eval()
log = sys.argv[4]

class Digits(Model):
    def __init__(self, name, labels, flat=False, model=net, nhwc=None):
        super().__init__(name)
        self.labels, self.flat, self.model = labels, flat, model
        self.nhwc = not labels if nhwc is None else nhwc
        self.ready = True
    def get_input_types(self):
        shape = [-1, 32, 32, 1] if self.nhwc else [-1, 1, 32, 32]
        return [{"name": "image", "datatype": "FP32", "shape": shape}]
    def get_output_types(self):
        return [{"name": "out", "datatype": "INT64" if self.labels else "FP32", "shape": [-1, -1]}]
    async def predict(self, payload, headers=None, response_headers=None):
        x = torch.from_numpy(np.asarray(payload.inputs[0].as_numpy(), np.float32))
        with open(log, "a") as f:
            f.write(f"{self.name} {x.shape[0]}\n")
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        with torch.no_grad():
            s = self.model(x.contiguous())
        res = s.topk(3, dim=1).indices.numpy().astype(np.int64) if self.labels else s.numpy()
        res = res.reshape(-1) if self.flat else res
        out = InferOutput(name="out", shape=list(res.shape),
                          datatype="INT64" if self.labels else "FP32")
        out.set_data_from_numpy(res)
        return InferResponse(model_name=self.name, infer_outputs=[out],
                             response_id=payload.id or "0")

ModelServer(http_port=int(sys.argv[1]), enable_grpc=False, workers=1,
            enable_latency_logging=False).start([Digits("digits", False),
                                                 Digits("digits-labels", True),
                                                 Digits("digits-flat", False, flat=True),
                                                 Digits("other", False, model=other,
                                                        nhwc=False)])
"""


def free_port() -> int:
    """A TCP port nobody listens on (now) on 127.0.0.1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_kserve(port: int, log: str | None = None):
    """Start the KServe server above on ``port`` (its request log at ``log``) and wait until it
    is ready (60 s at most); returns the process."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from fastfp import zoo

    for name in (KSERVE_MODEL, KSERVE_OTHER):
        zoo.load(name)  # trained (or read from the cache) once, before the server reads it
    proc = subprocess.Popen([sys.executable, "-c", KSERVE_SERVER, str(port), KSERVE_MODEL,
                             KSERVE_OTHER, log or os.devnull],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    proc.wait(10)
    raise RuntimeError("server did not become ready in 60 s")


def stop_kserve(proc) -> None:
    proc.kill()
    proc.wait(10)


class KServe:
    """A running KServe server: its base ``url`` and the images each served model received."""

    def __init__(self, url: str, log):
        self.url, self.log = url, log

    def received(self, model: str) -> int:
        """Images the served ``model`` has received so far."""
        if not self.log.exists():
            return 0
        return sum(int(n) for name, n in (line.split() for line in
                                          self.log.read_text().splitlines()) if name == model)



# ------------------------------------------------------------------ hostile suspect files
def tiny_linear(seed: int = 0) -> nn.Module:
    """A small classifier of (B, 1, 3, 4) inputs into 10 classes."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 10)).eval()


def plant_marker(marker: str) -> nn.Module:
    """What a hostile pickle runs when it is unpickled: write the marker, then look normal."""
    with open(marker, "w") as f:
        f.write("code ran")
    return tiny_linear()


class HostilePickle(nn.Module):
    """Unpickling it (torch.save'd or pickled as is) runs :func:`plant_marker`."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def __reduce__(self):
        return (plant_marker, (self.marker,))


class HostileScript(nn.Module):
    """Scripted, its ``__setstate__`` runs inside ``torch.jit.load`` and creates the marker."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        linear = tiny_linear()[1]
        self.weight = linear.weight.detach().clone()
        self.bias = linear.bias.detach().clone()
        self.marker = marker

    def forward(self, x):
        return x.flatten(1) @ self.weight.t() + self.bias

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool, torch.Tensor, torch.Tensor]:
        return (self.marker, self.training, self.weight, self.bias)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool, torch.Tensor, torch.Tensor]) -> None:
        self.marker = state[0]
        self.training = state[1]
        planted = torch.from_file(state[0], True, 1)  # shared=True creates the file
        self.weight = state[2] + 0.0 * planted.sum()
        self.bias = state[3]


def rewrite_safetensors_metadata(path, change) -> None:
    """Rewrite the file at ``path`` with its header metadata changed by ``change`` (tensors kept):
    how a tampered or downgraded sealed file is made in the tests."""
    import json

    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header["__metadata__"] = change(header["__metadata__"])
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n:])
