import subprocess
import sys

import pytest

import fastfp
from fastfp import backend


def test_import_is_light():
    # `import fastfp` must not pull in triton, cupy or the extension.
    code = ("import sys, fastfp; "
            "print(any(m in sys.modules for m in ('triton', 'cupy', 'fastfp._ext')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_report_has_every_field():
    info = backend.report()
    for key in ("cuda", "triton", "triton_interpreter", "cupy", "cupy_usable", "extension",
                "cpu_threads", "fastfp_backend"):
        assert key in info
    text = backend.format_report(info)
    assert "extension" in text and "Triton" in text


def test_bad_forced_backend(monkeypatch):
    monkeypatch.setenv("FASTFP_BACKEND", "gpu-please")
    with pytest.raises(ValueError, match="FASTFP_BACKEND"):
        backend.forced()


def test_missing_backend_message_is_actionable(monkeypatch):
    monkeypatch.setenv("FASTFP_BACKEND", "cuda")
    err = backend.missing("cuda", "noise.perturb")
    assert isinstance(err, RuntimeError)
    assert "FASTFP_BACKEND=auto" in str(err) and "noise.perturb" in str(err)


def test_extension_roundtrip_numpy_and_torch():
    ext = backend.extension()
    if ext is None:
        pytest.skip("extension not built")
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    x = rng.random(1000, dtype=np.float32)
    g = rng.standard_normal(1000).astype(np.float32)
    g[::7] = 0.0
    out = np.empty_like(x)
    ext.sign_step_cpu(x, g, out, 0.25, 0.1, 0.9)
    np.testing.assert_array_equal(out, np.clip(x - np.float32(0.25) * np.sign(g), 0.1, 0.9))
    xt, gt = torch.from_numpy(x), torch.from_numpy(g)
    outt = torch.empty_like(xt)
    ext.sign_step_cpu(xt, gt, outt, 0.25, 0.1, 0.9)
    assert torch.equal(outt, torch.from_numpy(out))
    with pytest.raises(TypeError):  # float64 must not be silently converted
        ext.sign_step_cpu(x.astype(np.float64), g, out, 0.25, 0.0, 1.0)


def test_cli_version():
    out = subprocess.run([sys.executable, "-m", "fastfp", "--version"], capture_output=True,
                         text=True, check=True)
    assert fastfp.__version__ in out.stdout and "extension" in out.stdout
