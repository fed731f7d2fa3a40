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


def test_import_after_torch_registers_the_ops_and_stays_light():
    # with torch loaded, `import fastfp` imports fastfp.ops (its torch ops), still nothing optional
    code = ("import sys, torch, fastfp; "
            "print(any(m in sys.modules for m in ('triton', 'cupy', 'fastfp._ext')), "
            "'fastfp.ops' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


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

    from fastfp.reference import noise as ref

    out = np.full(1000, np.nan, dtype=np.float32)  # numpy and torch arrays through DLPack
    ext.noise_fill(out, 5, 0.25, 3, 2)
    np.testing.assert_array_equal(out, ref.noise(5, 1000, 0.25, 3, 2).numpy())
    outt = torch.full((1000,), float("nan"))
    ext.noise_fill(outt, 5, 0.25, 3, 2)
    assert torch.equal(outt, torch.from_numpy(out))
    with pytest.raises(TypeError, match="out: expected float32"):  # never silently converted
        ext.noise_fill(out.astype(np.float64), 5, 0.25, 3, 2)


def test_report_names_no_layer_rerouting():
    # fastfp runs the user's own layers: nothing to report or switch about them
    info = backend.report()
    assert not any("layer" in key for key in info)
    assert "layer" not in backend.format_report(info).lower()


def test_cli_version_and_info():
    out = subprocess.run([sys.executable, "-m", "fastfp", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == fastfp.__version__  # the version only
    info = subprocess.run([sys.executable, "-m", "fastfp", "info"], capture_output=True,
                          text=True, check=True)
    assert "extension" in info.stdout  # the backend table lives in `fastfp info`
