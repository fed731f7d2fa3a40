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
