"""Weight noise: the Philox stream, extension vs the torch twin, statistics, grad_mean, errors."""

import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import tiny_cnn

from fastfp import backend
from fastfp import noise as N
from fastfp.cexamples import gradmean
from fastfp.reference import noise as R

HAS_EXT = backend.extension() is not None and hasattr(backend.extension(), "noise_perturb")
needs_ext = pytest.mark.skipif(not HAS_EXT, reason="extension not built")

# Random123's published known-answer vectors for Philox4x32-10 (kat_vectors).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def _params(dtypes=(torch.float32,), seed=0, device="cpu"):
    """A parameter list with awkward sizes: odd, tiny, same shapes twice, not multiples of 4."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 9), (1,), (3, 3, 3), (5,), (33, 31), (5,), (2, 257), (1, 1)]
    out = []
    for i, s in enumerate(shapes):
        t = torch.randn(s, generator=g) * 3
        out.append(t.to(dtypes[i % len(dtypes)]).to(device))
    return out


def _bits(t):
    return t.view(torch.int16) if t.element_size() == 2 else t.view(torch.int32)


def _same(got, want):
    """Two lists of tensors equal bit for bit."""
    return len(got) == len(want) and all(torch.equal(_bits(g), _bits(w))
                                         for g, w in zip(got, want, strict=True))


def _tiny_cnn(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 5, 5))


# ----------------------------------------------------------------------------- the Philox stream

@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_known_answers(counter, key, expected):
    assert R.philox4x32_10_scalar(counter, key) == expected
    words = R.philox4x32_10(*[torch.tensor([c], dtype=torch.int64) for c in counter], key)
    assert tuple(int(w) for w in words) == expected


def test_vectorised_philox_equals_scalar_and_counter_layout():
    rng = np.random.default_rng(1)
    seed, offset = int(rng.integers(2**63)) * 2 + 1, 2**40 + 12345  # both words non-zero
    starts = [0, 3, 2**34 + 1, 2**35 - 2]  # block index crosses 2^32: high counter word used
    for start in starts:
        got = R.bits(start, 9, seed, offset)
        for k in range(9):
            i = start + k
            b = i // 4
            words = R.philox4x32_10_scalar((b, b >> 32, offset, offset >> 32), R.split64(seed))
            assert int(got[k]) == words[i % 4]


def test_noise_statistics():
    delta = 0.05
    z = N.noise(400_000, delta, seed=3).double()
    assert z.min() >= -delta and z.max() < delta
    assert abs(z.mean().item()) < 4 * delta / (3 * 400_000) ** 0.5
    assert z.var().item() == pytest.approx(delta**2 / 3, rel=0.01)
    # uniform: chi-square over 20 equal bins (19 dof; 99.9 % quantile ~ 43.8)
    counts = torch.histc(z, bins=20, min=-delta, max=delta)
    expected = z.numel() / 20
    assert ((counts - expected) ** 2 / expected).sum().item() < 43.8


def test_noise_independence_across_copies_steps_seeds_and_neighbours():
    n = 200_000
    a = N.noise(n, 1.0, seed=5, offset=0)
    others = [N.noise(n, 1.0, seed=5, offset=1), N.noise(n, 1.0, seed=5, offset=10 * 7 + 3),
              N.noise(n, 1.0, seed=6, offset=0), N.noise(n, 1.0, seed=5, offset=0, start=1)]
    for b in others:
        r = torch.corrcoef(torch.stack([a, b]).double())[0, 1].item()
        assert abs(r) < 5 / n**0.5
    assert not torch.equal(a, others[0])


def test_noise_dtype_rounding_bounds():
    delta = 1e-3
    p = torch.zeros(10_000)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        out = N.perturb([p.to(dtype)], delta, seed=1)[0].float()
        bound = delta * (1 + torch.finfo(dtype).eps)
        assert out.abs().max() <= bound and out.std() > delta / 3


# ----------------------------------------------------------------------------- extension == twin

@needs_ext
@pytest.mark.parametrize("dtypes", [(torch.float32,), (torch.bfloat16,), (torch.float16,),
                                    (torch.float32, torch.float16, torch.bfloat16)])
def test_extension_equals_reference_bit_for_bit(dtypes):
    params = _params(dtypes, seed=len(dtypes))
    for seed, offset, delta in [(0, 0, 0.01), (2**33 + 7, 2**32 + 5, 0.3),
                                (2**64 - 1, 2**64 - 1, 2.5)]:
        got = N.perturb(params, delta, seed, offset)
        assert backend.last_used("noise.perturb") == "ext"
        want = R.perturb(params, delta, seed, offset)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and g.shape == w.shape
            assert torch.equal(_bits(g), _bits(w))


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_extension_half_conversions_exhaustive(dtype):
    # Every finite 16-bit pattern as a master, with noise that lands on ties, subnormals, overflow.
    bits_ = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    master = bits_.view(dtype)
    master = master[torch.isfinite(master.float())]
    for delta in (0.0, 1e-6, 3e-3, 70.0):
        got = N.perturb([master], delta, seed=11, offset=2)[0]
        want = R.perturb([master], delta, seed=11, offset=2)[0]
        assert torch.equal(got.view(torch.int16), want.view(torch.int16))


def _awkward_list():
    """> 40 tensors (several CUDA launch tables), zero-size ones, odd sizes, misaligned storage."""
    g = torch.Generator().manual_seed(7)
    dtypes = (torch.float32, torch.bfloat16, torch.float16)
    params = [(torch.randn(n, generator=g) * 4).to(dtypes[n % 3]) for n in range(0, 45)]
    storage = torch.randn(4003, generator=g)
    params.insert(7, storage[1:4001].view(40, 100))  # contiguous, 4 bytes past a 16-byte boundary
    half = torch.randn(999, generator=g).half()
    params.insert(20, half[3:])  # 6 bytes past an 8-byte boundary
    params.append(torch.randn(64, 33, generator=g))
    return params


@pytest.mark.skipif(not HAS_EXT or not hasattr(backend.extension().NoisePlan, "_emulate_cuda"),
                    reason="extension built without its CUDA part")
def test_cuda_kernel_logic_emulated_on_host_equals_cpu():
    ext = backend.extension()
    params = _awkward_list()
    for seed, offset in [(0, 0), (2**35 + 1, 2**33 + 3)]:
        want = N.perturb(params, 0.3, seed, offset)
        outs = [torch.full_like(p, float("nan")) for p in params]
        ext.NoisePlan([p.contiguous() for p in params], outs)._emulate_cuda(0.3, seed, offset)
        for i, (o, w) in enumerate(zip(outs, want, strict=True)):
            assert torch.equal(_bits(o), _bits(w)), i
    outs = [torch.full((1001,), float("nan"))]
    plan = ext.NoisePlan([torch.zeros(1001)], outs)
    plan._emulate_cuda(0.2, 3, 1)
    assert torch.equal(outs[0], N.noise(1001, 0.2, 3, 1))


@needs_ext
def test_awkward_lists_equal_reference():
    params = _awkward_list()
    for g, w in zip(N.perturb(params, 0.1, 5, 6), R.perturb(params, 0.1, 5, 6), strict=True):
        assert torch.equal(_bits(g), _bits(w))


@needs_ext
def test_fill_equals_reference_at_any_start():
    for start, n in [(0, 1), (1, 7), (253, 600), (2**33 + 3, 1000)]:
        got = N.noise(n, 0.2, seed=4, offset=9, start=start)
        assert backend.last_used("noise.noise") == "ext"
        assert torch.equal(got, R.noise(start, n, 0.2, seed=4, offset=9))


def test_torch_fallback_equals_reference(monkeypatch):
    monkeypatch.setenv("FASTFP_BACKEND", "torch")
    params = _params((torch.float32, torch.bfloat16, torch.float16), seed=2)
    seed, offset = 2**63 + 2**33 + 17, 2**40 + 4  # high key and counter words in use
    got = N.perturb(params, 0.05, seed, offset)
    assert backend.last_used("noise.perturb") == "torch"
    for g, w in zip(got, R.perturb(params, 0.05, seed, offset), strict=True):
        assert torch.equal(g, w)
    monkeypatch.setattr(N, "TORCH_CHUNK", 100)  # chunk edges inside tensors change nothing
    for g, w in zip(N.perturb(params, 0.05, seed, offset), got, strict=True):
        assert torch.equal(g, w)
    for start, n in [(0, 1), (3, 998), (2**34 + 1, 301)]:
        assert torch.equal(N.noise(n, 0.7, seed, offset, start=start),
                           R.noise(start, n, 0.7, seed, offset))


@needs_ext
def test_extension_takes_numpy_through_dlpack():
    ext = backend.extension()
    rng = np.random.default_rng(0)
    masters = [rng.standard_normal(s).astype(np.float32) for s in [(3, 5), (11,)]]
    outs = [np.empty_like(m) for m in masters]
    ext.noise_perturb(masters, outs, 0.1, 8, 3)
    want = R.perturb([torch.from_numpy(m) for m in masters], 0.1, 8, 3)
    for o, w in zip(outs, want, strict=True):
        np.testing.assert_array_equal(o, w.numpy())


def test_same_shape_tensors_get_different_noise():
    p = [torch.zeros(64), torch.zeros(64)]
    a, b = N.perturb(p, 1.0, seed=0)
    assert not torch.equal(a, b)
    assert torch.equal(b, N.noise(64, 1.0, seed=0, start=64))  # counter continues end to end


def test_reproducible_and_stream_selection():
    params = _params(seed=5)
    a = N.perturb(params, 0.1, seed=42, offset=3)
    b = N.perturb(params, 0.1, seed=42, offset=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    for seed, offset in [(42, 4), (43, 3)]:
        c = N.perturb(params, 0.1, seed=seed, offset=offset)
        assert not any(torch.equal(x, y) for x, y in zip(a, c, strict=True) if x.numel() > 4)


@needs_ext
def test_bits_independent_of_thread_count():
    # this process: every OpenMP thread (2 on CI); the child: a single thread
    code = ("import torch, fastfp; "
            "z = fastfp.noise.noise(300_001, 0.5, seed=9, offset=2, start=5); "
            "print(fastfp.backend.last_used('noise.noise'), "
            "fastfp.backend.extension_info()['threads'], "
            "float((z.double() * torch.arange(z.numel())).sum()))")
    env = dict(os.environ, OMP_NUM_THREADS="1", FASTFP_BACKEND="auto")
    impl, threads, value = subprocess.run([sys.executable, "-c", code], env=env,
                                          capture_output=True, text=True, check=True).stdout.split()
    z = N.noise(300_001, 0.5, seed=9, offset=2, start=5)
    assert (impl, threads) == ("ext", "1") and backend.last_used("noise.noise") == "ext"
    assert float(value) == float((z.double() * torch.arange(z.numel())).sum())


def test_master_untouched_and_in_place_out():
    params = _params((torch.float32, torch.float16))
    before = [p.clone() for p in params]
    out = N.perturb(params, 0.1, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(params, before, strict=True))
    N.perturb(params, 0.1, seed=1, out=params)  # in place: same values as the fresh outputs
    assert all(torch.equal(p, o) for p, o in zip(params, out, strict=True))


def test_in_place_on_module_parameters_and_exact_restore():
    lin = torch.nn.Linear(6, 4)
    params = list(lin.parameters())
    masters = [p.detach().clone() for p in params]
    noisy = N.perturb(params, 0.1, seed=2, offset=1, out=params)
    assert noisy[0] is params[0] and not torch.equal(params[0], masters[0])
    assert _same(params, R.perturb(masters, 0.1, 2, 1))
    with torch.no_grad():
        for p, m in zip(params, masters, strict=True):
            p.copy_(m)
    assert lin.weight.grad is None and lin.weight.requires_grad


def test_perturbed_context_restores_exactly_even_on_error():
    model = _tiny_cnn(5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masters = [p.detach().clone() for p in model.parameters()]
    with N.perturbed(model, 0.2, seed=4, offset=9) as params:
        assert _same(params, R.perturb(masters, 0.2, 4, 9))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(KeyError):
        with N.perturbed(model, 0.2, seed=4):
            raise KeyError("boom")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="delta"):
        with N.perturbed(model, -0.2, seed=4):
            pass


def test_perturber_reuses_buffers_and_sees_in_place_updates():
    params = _params(seed=3)
    noisy = N.Perturber(params)
    a = [t.clone() for t in noisy.draw(0.1, 1, 0)]
    b = noisy.draw(0.1, 1, 1)
    assert b is noisy.out and _same(b, N.perturb(params, 0.1, 1, 1))
    with torch.no_grad():
        params[0].add_(1.0)  # the master changed in place: the next draw reads the new values
    c = noisy.draw(0.1, 1, 0)
    torch.testing.assert_close(c[0], a[0] + 1.0, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="delta"):
        noisy.draw(-1.0, 1, 0)


@pytest.mark.parametrize("forced", ["auto", "torch"])
def test_perturber_sees_in_place_updates_of_non_contiguous_params(forced, monkeypatch):
    # every implementation reads the params at each draw, strided ones included
    monkeypatch.setenv("FASTFP_BACKEND", forced)
    base = torch.randn(6, 10)
    params = [base.t(), torch.randn(5)]
    noisy = N.Perturber(params)
    noisy.draw(0.1, 2, 0)
    with torch.no_grad():
        base.mul_(-3.0)
    got = noisy.draw(0.1, 2, 1)
    want = R.perturb([p.contiguous() for p in params], 0.1, 2, 1)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_noise_bad_input():
    with pytest.raises(ValueError, match="numel"):
        N.noise(-1, 0.1, 0)
    with pytest.raises(ValueError, match="start"):
        N.noise(3, 0.1, 0, start=-2)
    with pytest.raises(TypeError, match="seed"):
        N.noise(3, 0.1, "0")
    assert N.noise(0, 0.1, 0).shape == (0,)


def test_non_contiguous_params_follow_row_major_order():
    base = torch.randn(6, 10)
    t = base.t()  # non-contiguous view
    got = N.perturb([t, base[:, 1]], 0.2, seed=3)
    want = R.perturb([t.contiguous(), base[:, 1].contiguous()], 0.2, seed=3)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_requires_grad_params_are_fine():
    lin = torch.nn.Linear(5, 3)
    out = N.perturb(list(lin.parameters()), 0.1, seed=0)
    assert not any(o.requires_grad for o in out) and lin.weight.grad is None


def test_forced_backends(monkeypatch):
    monkeypatch.setenv("FASTFP_BACKEND", "reference")
    N.perturb([torch.zeros(3)], 0.1, 0)
    assert backend.last_used("noise.perturb") == "torch"
    if not torch.cuda.is_available():
        monkeypatch.setenv("FASTFP_BACKEND", "cuda")
        with pytest.raises(RuntimeError, match="FASTFP_BACKEND=auto"):
            N.perturb([torch.zeros(3)], 0.1, 0)


def test_tensor_offset_equals_int_offset(monkeypatch):
    params = _params((torch.float32, torch.bfloat16, torch.float16), seed=6)
    for forced in ("auto", "torch"):
        monkeypatch.setenv("FASTFP_BACKEND", forced)
        noisy = N.Perturber(params)
        for value in (0, 7, 2**40 + 3):
            got = [t.clone() for t in noisy.draw(0.2, 9, torch.tensor([value]))]
            want = R.perturb(params, 0.2, 9, value)
            assert _same(got, want), (forced, value)
        # a 0-d tensor is one element too; the value is read at each draw
        off = torch.tensor(5)
        noisy.draw(0.2, 9, off)
        off += 1
        assert _same(noisy.draw(0.2, 9, off), R.perturb(params, 0.2, 9, 6))
        assert backend.last_used("noise.perturb") == ("ext" if HAS_EXT and forced == "auto"
                                                      else "torch")


@pytest.mark.parametrize("offset,exc,match", [
    (torch.tensor([1, 2]), ValueError, "offset: expected a one-element tensor"),
    (torch.tensor([1], dtype=torch.int32), TypeError, "offset: expected an int or an int64"),
    (torch.tensor([-3]), ValueError, "offset: expected an int64 >= 0"),
    (torch.tensor([1], device="meta"), ValueError, "offset: on meta"),
    (1.0, TypeError, "offset: expected an int"),
])
def test_bad_offset(offset, exc, match):
    noisy = N.Perturber([torch.zeros(3)])
    with pytest.raises(exc, match=match):
        noisy.draw(0.1, 0, offset)
    with pytest.raises(exc, match=match):
        N.perturb([torch.zeros(3)], 0.1, 0, offset)


@pytest.mark.parametrize("forced", ["auto", "torch"])
def test_perturber_rebinds_after_resize(forced, monkeypatch):
    # the storage of a resized tensor moves: a draw must neither write through the old memory
    # nor read it (this used to segfault), but draw on the current tensors
    monkeypatch.setenv("FASTFP_BACKEND", forced)
    params = [torch.randn(300), torch.randn(4, 5)]
    noisy = N.Perturber(params)
    noisy.draw(0.1, 1, 0)
    with torch.no_grad():
        params[0].resize_(50_000).uniform_(-1, 1)  # reallocates
    got = noisy.draw(0.1, 1, 2)
    assert got[0].shape == (50_000,)
    assert all(torch.equal(g, w) for g, w in zip(got, R.perturb(params, 0.1, 1, 2), strict=True))
    noisy.out[1].resize_(2)  # its own buffer resized: re-allocated to the parameter's shape
    got = noisy.draw(0.1, 1, 3)
    assert got[1].shape == (4, 5)
    assert all(torch.equal(g, w) for g, w in zip(got, R.perturb(params, 0.1, 1, 3), strict=True))
    outs = [torch.empty(50_000), torch.empty(4, 5)]
    given = N.Perturber(params, outs)
    outs[1].resize_(50, 50)  # a given out that no longer matches: a clear error, nothing written
    with pytest.raises(ValueError, match=r"out\[1\]: expected shape \(4, 5\)"):
        given.draw(0.1, 1, 0)


@pytest.mark.parametrize("forced", ["auto", "torch"])
@pytest.mark.parametrize("which", ["out", "params"])
def test_perturber_refuses_a_storage_freed_under_its_tensors(forced, which, monkeypatch):
    # FSDP frees a tensor's storage with untyped_storage().resize_(0) and keeps its shape: the
    # extension writes through raw pointers, so this used to segfault
    monkeypatch.setenv("FASTFP_BACKEND", forced)
    params, outs = [torch.randn(100, 100), torch.randn(7)], [torch.empty(100, 100), torch.empty(7)]
    noisy = N.Perturber(params, outs)
    noisy.draw(0.1, 0, 0)
    (outs if which == "out" else params)[0].untyped_storage().resize_(0)
    with pytest.raises(ValueError, match=rf"{which}\[0\]: its storage holds 0 bytes"):
        noisy.draw(0.1, 0, 1)
    with pytest.raises(ValueError, match="storage holds 0 bytes"):
        N.Perturber(params, outs)


@pytest.mark.parametrize("forced", ["auto", "torch"])
def test_perturber_follows_replaced_data(forced, monkeypatch):
    monkeypatch.setenv("FASTFP_BACKEND", forced)
    lin = torch.nn.Linear(6, 4)
    params = list(lin.parameters())
    noisy = N.Perturber(params)
    noisy.draw(0.1, 3, 0)
    lin.weight.data = torch.randn(4, 6)  # new storage, same shape: no stale draws
    got = noisy.draw(0.1, 3, 1)
    assert all(torch.equal(g, w) for g, w in zip(got, R.perturb(params, 0.1, 3, 1), strict=True))
    lin.weight.data = torch.randn(6, 3).t()  # another shape, non-contiguous
    got = noisy.draw(0.1, 3, 2)
    assert got[0].shape == (3, 6)
    want = R.perturb([p.contiguous() for p in params], 0.1, 3, 2)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    lin.weight.data = torch.zeros(3, 6, dtype=torch.float64)  # re-validated like a new Perturber
    with pytest.raises(TypeError, match=r"params\[0\]: expected float32"):
        noisy.draw(0.1, 3, 3)


# ----------------------------------------------------------------------------- grad_mean

@pytest.mark.parametrize("forced", ["auto", "torch"])
def test_grad_mean_equals_literal_deepcopy_loop(monkeypatch, forced):
    monkeypatch.setenv("FASTFP_BACKEND", forced)
    model = _tiny_cnn().train()  # grad_mean must evaluate in eval mode and restore the mode
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.2, 0.2)
    before = copy.deepcopy(model.state_dict())
    x = torch.rand(3, 3, 6, 5)
    labels = torch.tensor([0, 4, 2])
    got = gradmean.grad_mean(model, x, labels, delta=0.05, q=3, seed=7, offset=6)
    want = R.grad_mean(model, x, labels, delta=0.05, q=3, seed=7, offset=6)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    assert got.shape == x.shape and not got.requires_grad
    assert model.training
    for k, v in model.state_dict().items():  # weights and BN statistics bit-identical
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert backend.last_used("noise.grad_mean") == ("torch" if forced == "torch" else
                                                    ("ext" if HAS_EXT else "torch"))


def test_noise_grad_mean_is_a_deprecated_alias_of_the_cexamples_one():
    # the stream module holds no method code: its old grad_mean name points to the one in cexamples
    with pytest.warns(DeprecationWarning, match="cexamples.gradmean.grad_mean"):
        alias = N.grad_mean
    assert alias is gradmean.grad_mean
    with pytest.raises(AttributeError):
        N.no_such_name  # noqa: B018


def test_grad_mean_copies_are_the_offset_streams():
    model = _tiny_cnn(1).eval()
    x, labels = torch.rand(2, 3, 6, 5), torch.tensor([1, 3])
    singles = [gradmean.grad_mean(model, x, labels, 0.1, 1, seed=2, offset=o) for o in (4, 5)]
    both = gradmean.grad_mean(model, x, labels, 0.1, 2, seed=2, offset=4)
    torch.testing.assert_close(both, (singles[0] + singles[1]) / 2, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(singles[0], singles[1])
    # per-example gradients: the loss is summed, so an example's gradient ignores its batch
    alone = gradmean.grad_mean(model, x[:1], labels[:1], 0.1, 1, seed=2, offset=4)
    torch.testing.assert_close(alone, singles[0][:1], rtol=1e-5, atol=1e-7)


def test_grad_mean_vmap_batch_equals_loop():
    model = _tiny_cnn(4).train()
    x, labels = torch.rand(3, 3, 6, 5), torch.tensor([2, 0, 1])
    loop = gradmean.grad_mean(model, x, labels, 0.05, 4, seed=3, offset=8)
    vm = gradmean.grad_mean(model, x, labels, 0.05, 4, seed=3, offset=8, batch="vmap")
    torch.testing.assert_close(vm, loop, rtol=1e-5, atol=1e-7)
    assert model.training and all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("batch", ["loop", "vmap"])
def test_grad_mean_under_no_grad_and_inference_mode(batch):
    model = _tiny_cnn(6).eval()
    x, labels = torch.rand(2, 3, 6, 5), torch.tensor([3, 1])
    want = gradmean.grad_mean(model, x, labels, 0.05, 2, seed=4, batch=batch)
    with torch.no_grad():
        got = gradmean.grad_mean(model, x, labels, 0.05, 2, seed=4, batch=batch)
    assert torch.equal(got, want)
    with torch.inference_mode():
        xi, li = x.clone(), labels.clone()  # inference tensors
        got = gradmean.grad_mean(model, xi, li, 0.05, 2, seed=4, batch=batch)
    assert torch.equal(got, want)
    assert all(p.grad is None for p in model.parameters())


def test_grad_mean_zero_delta_is_the_plain_gradient():
    model = _tiny_cnn(2).eval()
    x, labels = torch.rand(2, 3, 6, 5), torch.tensor([0, 1])
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(xg), labels, reduction="sum").backward()
    torch.testing.assert_close(gradmean.grad_mean(model, x, labels, 0.0, 2, seed=0), xg.grad)


def test_grad_mean_tensor_offset_equals_int_offset():
    model = _tiny_cnn(7).eval()
    x, labels = torch.rand(2, 3, 6, 5), torch.tensor([1, 4])
    want = gradmean.mean_grad(model, x, labels, 0.05, 3, 2, 6, strategy="loop")
    for strategy, m, copies in [("loop", model, 1), ("vmap", model, 2),
                                ("in_place", torch.jit.script(model), 1)]:
        got = gradmean.mean_grad(m, x, labels, 0.05, 3, 2, torch.tensor([6]), strategy=strategy,
                                 copies=copies)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    got = gradmean.grad_mean(model, x, labels, 0.05, 3, 2, offset=torch.tensor([6]))
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("copies", [2, 3, 5])
def test_gradmean_vmap_groups_equal_the_loop_and_the_literal_twin(copies):
    model = tiny_cnn()
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 4, 2])
    loop = gradmean.mean_grad(model, x, y, 0.05, 5, 2, 10)
    batched = gradmean.mean_grad(model, x, y, 0.05, 5, 2, 10, copies=copies)  # auto: vmap
    torch.testing.assert_close(batched, loop, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(loop, R.grad_mean(model, x, y, 0.05, 5, seed=2, offset=10),
                               atol=1e-6, rtol=1e-5)
    assert not torch.allclose(loop, gradmean.mean_grad(model, x, y, 0.05, 5, 2, 11))


class DataDependent(torch.nn.Module):
    """vmap cannot trace a branch on a value computed from the (batched) weights."""

    def __init__(self):
        super().__init__()
        self.net = tiny_cnn()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = self.net(x)
        return out if float(out.sum()) > -1e9 else -out


def test_untraceable_model_falls_back_to_the_loop_once():
    model = DataDependent()
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([1, 3])
    got = gradmean.mean_grad(model, x, y, 0.05, 3, 0, 0, copies=3)
    assert model.calls == 1 + 3  # the failed vmap attempt, then the loop's three copies
    torch.testing.assert_close(got, gradmean.mean_grad(model.net, x, y, 0.05, 3, 0, 0),
                               atol=1e-6, rtol=1e-5)
    model.calls = 0
    gradmean.mean_grad(model, x, y, 0.05, 3, 0, 0, copies=3)
    assert model.calls == 3  # remembered: no second attempt
    with pytest.raises(RuntimeError):  # asked for explicitly, vmap's error is the caller's
        gradmean.mean_grad(model, x, y, 0.05, 3, 0, 0, strategy="vmap", copies=3)


def test_torchscript_models_get_the_noise_in_place_and_their_weights_back():
    plain = tiny_cnn()
    model = torch.jit.script(tiny_cnn())
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([1, 3])
    g = gradmean.mean_grad(model, x, y, 0.05, 3, 0, 0)  # auto: in place
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    want = gradmean.mean_grad(plain, x, y, 0.05, 3, 0, 0)
    torch.testing.assert_close(g, want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gradmean.grad_mean(model, x, y, 0.05, 3, 0), want, atol=1e-6,
                               rtol=1e-5)
    with pytest.raises(ValueError, match="strategy: expected one of"):
        gradmean.mean_grad(plain, x, y, 0.05, 3, 0, 0, strategy="stacked")


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("params,delta,seed,offset,exc,match", [
    ([torch.zeros(3)], -0.1, 0, 0, ValueError, "delta"),
    ([torch.zeros(3)], float("nan"), 0, 0, ValueError, "delta"),
    ([torch.zeros(3)], 0.1, -1, 0, ValueError, "seed"),
    ([torch.zeros(3)], 0.1, 0, 2**64, ValueError, "offset"),
    ([torch.zeros(3)], 0.1, 1.5, 0, TypeError, "seed"),
    ([], 0.1, 0, 0, ValueError, "params"),
    (torch.zeros(3), 0.1, 0, 0, TypeError, "params"),
    ([torch.zeros(3), "w"], 0.1, 0, 0, TypeError, r"params\[1\]"),
    ([torch.zeros(3, dtype=torch.float64)], 0.1, 0, 0, TypeError, r"params\[0\].*float64"),
    ([torch.zeros(3, dtype=torch.int32)], 0.1, 0, 0, TypeError, r"params\[0\]"),
    ([torch.zeros(3), torch.zeros(3, device="meta")], 0.1, 0, 0, ValueError,
     r"params\[1\].*device"),
])
def test_perturb_bad_input(params, delta, seed, offset, exc, match):
    with pytest.raises(exc, match=match):
        N.perturb(params, delta, seed, offset)


def test_perturb_bad_out():
    p = [torch.zeros(3), torch.zeros(4)]
    with pytest.raises(ValueError, match="out"):
        N.perturb(p, 0.1, 0, out=[torch.zeros(3)])
    with pytest.raises(ValueError, match=r"out\[1\]"):
        N.perturb(p, 0.1, 0, out=[torch.zeros(3), torch.zeros(5)])
    with pytest.raises(ValueError, match=r"out\[0\].*contiguous"):
        N.perturb([torch.zeros(2, 3)], 0.1, 0, out=[torch.zeros(3, 2).t()])


def test_grad_mean_bad_input():
    model = _tiny_cnn()
    x, labels = torch.rand(2, 3, 6, 5), torch.tensor([0, 1])
    cases = [
        (dict(q=0), ValueError, "q: expected an int in"),
        (dict(q=2.0), TypeError, "q: expected an int"),
        (dict(delta=-1.0), ValueError, "delta"),
        (dict(labels=torch.tensor([0.0, 1.0])), TypeError, "labels"),
        (dict(labels=torch.tensor([0, 1, 2])), ValueError, "labels"),
        (dict(x=x.double()), TypeError, "x: torch.float64"),
        (dict(x=x.to(device="meta"), labels=labels.to(device="meta")), ValueError, "x: on meta"),
        (dict(model="net"), TypeError, "model"),
        (dict(model=torch.nn.ReLU()), ValueError, "model"),
        (dict(loss="mse"), ValueError, "loss"),
        (dict(batch="stack"), ValueError, "batch"),
        (dict(offset=2**64 - 1, q=2), ValueError, "offset"),
        # -100 is cross_entropy's ignore_index: it must not silently drop an example
        (dict(labels=torch.tensor([-100, 1])), ValueError, "labels: .*>= 0"),
        (dict(labels=torch.tensor([0, -1])), ValueError, "labels: .*>= 0"),
        (dict(labels=torch.tensor([5, 1])), ValueError, r"labels: .*< 5"),  # 5 classes
        (dict(labels=torch.tensor([5, 1]), batch="vmap"), ValueError, r"labels: .*< 5"),
    ]
    for override, exc, match in cases:
        kw = dict(model=model, x=x, labels=labels, delta=0.1, q=2, seed=0)
        kw.update(override)
        with pytest.raises(exc, match=match):
            gradmean.grad_mean(**kw)


@needs_ext
def test_extension_errors_are_clear():
    ext = backend.extension()
    a = np.zeros(6, dtype=np.float32)
    with pytest.raises(ValueError, match="masters"):
        ext.noise_perturb([], [], 0.1, 0, 0)
    with pytest.raises(ValueError, match="outs"):
        ext.noise_perturb([a], [], 0.1, 0, 0)
    with pytest.raises(TypeError, match=r"masters\[0\]"):
        ext.noise_perturb([a.astype(np.float64)], [a.astype(np.float64)], 0.1, 0, 0)
    with pytest.raises(TypeError, match=r"outs\[0\]"):
        ext.noise_perturb([a], [a.astype(np.float16)], 0.1, 0, 0)
    with pytest.raises(ValueError, match=r"masters\[0\].*contiguous"):
        ext.noise_perturb([np.zeros((4, 3), np.float32).T], [np.zeros((3, 4), np.float32)], 0.1, 0,
                          0)
    with pytest.raises(ValueError, match=r"outs\[0\]"):
        ext.noise_perturb([a], [np.zeros(5, np.float32)], 0.1, 0, 0)
    with pytest.raises(ValueError, match="delta"):
        ext.noise_perturb([a], [a], -1.0, 0, 0)
    plan = ext.NoisePlan([a], [np.empty_like(a)])
    with pytest.raises(ValueError, match="offset: expected a one-element"):
        plan.run_at(np.zeros(2, np.int64), 0.1, 0)
    with pytest.raises(TypeError):  # an int32 offset is not silently converted
        plan.run_at(np.zeros(1, np.int32), 0.1, 0)
    with pytest.raises(ValueError, match="delta"):
        plan.run_at(np.zeros(1, np.int64), -1.0, 0)


# ----------------------------------------------------------------------------- GPU

@pytest.mark.gpu
def test_cuda_awkward_list_equals_cpu():
    params = _awkward_list()
    gpu = [p.cuda() for p in params]
    storage = torch.randn(4003).cuda()
    gpu[7] = storage[1:4001].view(40, 100)  # keep the misalignment on the device
    params[7] = gpu[7].cpu()
    for g, w in zip(N.perturb(gpu, 0.1, 5, 6), N.perturb(params, 0.1, 5, 6), strict=True):
        assert torch.equal(_bits(g.cpu()), _bits(w))


@pytest.mark.gpu
def test_cuda_equals_cpu_bit_for_bit():
    dtypes = (torch.float32, torch.bfloat16, torch.float16)
    cpu = _params(dtypes, seed=9)
    # 50 tensors: more than one launch's table; odd sizes and offsets break vector alignment
    cpu = cpu + [torch.randn(n) for n in range(1, 43)]
    storage = torch.randn(10_001)
    cpu.append(storage[1:4001].view(40, 100))  # contiguous but not 16-byte aligned on the GPU too
    gpu = [p.cuda() for p in cpu]
    gpu[-1] = storage.cuda()[1:4001].view(40, 100)
    for seed, offset in [(0, 0), (2**40 + 3, 2**33 + 1)]:
        want = N.perturb(cpu, 0.02, seed, offset)
        got = N.perturb(gpu, 0.02, seed, offset)
        assert backend.last_used("noise.perturb") == (
            "cuda" if HAS_EXT and backend.extension_cuda_usable() else "torch")
        for g, w in zip(got, want, strict=True):
            assert torch.equal(_bits(g.cpu()), _bits(w))
    z = N.noise(100_003, 0.5, 1, 2, start=3, device="cuda")
    assert torch.equal(z.cpu(), N.noise(100_003, 0.5, 1, 2, start=3))


@pytest.mark.gpu
def test_cuda_torch_fallback_equals_kernel(monkeypatch):
    params = [p.cuda() for p in _params((torch.float32, torch.bfloat16), seed=4)]
    fast = N.perturb(params, 0.1, 5, 6)
    monkeypatch.setenv("FASTFP_BACKEND", "torch")
    slow = N.perturb(params, 0.1, 5, 6)
    assert all(torch.equal(_bits(a), _bits(b)) for a, b in zip(fast, slow, strict=True))


@pytest.mark.gpu
def test_cuda_grad_mean_matches_cpu():
    model = _tiny_cnn(3).eval()
    x, labels = torch.rand(4, 3, 6, 5), torch.tensor([0, 1, 2, 3])
    cpu = gradmean.grad_mean(model, x, labels, 0.05, 3, seed=1)
    gpu = gradmean.grad_mean(model.cuda(), x.cuda(), labels.cuda(), 0.05, 3, seed=1)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("forced", ["auto", "torch"])
def test_cuda_device_offset_and_graph_replays_draw_fresh_streams(forced, monkeypatch):
    monkeypatch.setenv("FASTFP_BACKEND", forced)
    cpu = _params((torch.float32, torch.bfloat16, torch.float16), seed=8) + [torch.randn(4001)]
    gpu = [p.cuda() for p in cpu]
    noisy = N.Perturber(gpu)
    offset = torch.tensor([2**33 + 5], dtype=torch.int64, device="cuda")
    got = noisy.draw(0.1, 7, offset)  # the device offset: the int offset's bits
    assert backend.last_used("noise.perturb") == (
        "cuda" if forced == "auto" and HAS_EXT and backend.extension_cuda_usable() else "torch")
    for g, w in zip(got, N.perturb(gpu, 0.1, 7, 2**33 + 5), strict=True):
        assert torch.equal(_bits(g), _bits(w))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up outside the capture
        noisy.draw(0.1, 7, offset)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        noisy.draw(0.1, 7, offset)
    for value in (11, 12):  # each replay reads the offset the tensor holds then
        offset.fill_(value)
        graph.replay()
        torch.cuda.synchronize()
        for g, w in zip(noisy.out, R.perturb(cpu, 0.1, 7, value), strict=True):
            assert torch.equal(_bits(g.cpu()), _bits(w)), value


def test_custom_op_compiles_and_differentiates():
    params = [torch.randn(5, 3, requires_grad=True), torch.randn(7, requires_grad=True)]

    def fn(ps):
        return torch.ops.fastfp.noise_perturb(ps, 0.1, 3, 4)

    want = N.perturb(params, 0.1, 3, 4)
    got = torch.compile(fn, backend="aot_eager", fullgraph=True)(params)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    out = fn(params)
    sum(o.sum() * (i + 2) for i, o in enumerate(out)).backward()
    assert torch.equal(params[0].grad, torch.full((5, 3), 2.0))
    assert torch.equal(params[1].grad, torch.full((7,), 3.0))
