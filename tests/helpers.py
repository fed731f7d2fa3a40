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
