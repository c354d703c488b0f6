"""The fused kernels (sslcurate._kernels via sslcurate.fused), on each instruction set this CPU runs (AVX-512,
AVX2): exact fp32 and int8 / int16-with-settling nearest centroids equal the float64 argmin, for every shape the
register tiles have to pad (rows, features, centroids not multiples of 6/8, 2/4/8/16 or 32), in place on strided
rows, with the same answer on any thread count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sslcurate.assign.resolve as assign_mod
from sslcurate import kmeans
from sslcurate.assign import TorchAssigner, get_assigner, resolve_backend, resolve_precision
from sslcurate.errors import CurationInputError
from sslcurate.fused import FusedAssigner, FusedInt8Assigner, FusedInt16Assigner, fused_available

pytestmark = pytest.mark.skipif(not fused_available("f32"), reason="needs the built extension and AVX2 or AVX-512")
ISAS = [pytest.param(isa, marks=pytest.mark.skipif(not fused_available(isa), reason=f"needs {isa}"))
        for isa in ("avx512", "avx2")]
INTS = [pytest.param(FusedInt8Assigner, marks=pytest.mark.skipif(not fused_available("int8"),
                                                                 reason="needs AVX512-VNNI"), id="int8"),
        pytest.param(FusedInt16Assigner, marks=pytest.mark.skipif(not fused_available("int16"),
                                                                  reason="needs AVX2"), id="int16")]


def _dist64(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x.double(), c.double()) ** 2


def _mixture(n: int, d: int, k: int, seed: int, offset: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(max(k // 2, 1), d, generator=g) * 2
    x = means[torch.randint(0, means.shape[0], (n,), generator=g)] + torch.randn(n, d, generator=g) + offset
    c = x[torch.randint(0, n, (k,), generator=g)] + 0.3 * torch.randn(k, d, generator=g)
    return x, c


def _check_nearest(x, c, idx, dist, rtol=2e-5):
    """idx is a nearest centroid in float64 up to fp32 resolution, and dist its squared distance."""
    d64 = _dist64(x, c)
    best = d64.min(1).values
    chosen = d64.gather(1, idx[:, None])[:, 0]
    scale = 1.0 + best + (x.double() ** 2).sum(1)
    assert ((chosen - best) <= 1e-6 * scale).all()
    np.testing.assert_allclose(dist.double().numpy(), chosen.numpy(), rtol=rtol, atol=1e-5 * float(scale.max()))
    return (idx == d64.argmin(1)).float().mean().item()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n,d,k", [(1, 1, 1), (7, 3, 5), (513, 17, 33), (1100, 128, 100), (300, 70, 1000)])
def test_fused_f32_is_the_exact_nearest_centroid(n, d, k, isa):
    x, c = _mixture(n, d, k, seed=n + d + k)
    a = FusedAssigner(isa=isa)
    prepared = a.prepare(c)
    idx, dist = a.assign(x, prepared)
    assert _check_nearest(x, c, idx, dist) > 0.999
    i2, d1, d2 = a.assign_top2(x, prepared)
    assert torch.equal(i2, idx)
    d64 = _dist64(x, c)
    if k == 1:
        assert torch.isinf(d2).all()
    else:
        second = d64.topk(2, dim=1, largest=False).values[:, 1]
        np.testing.assert_allclose(d2.double().numpy(), second.numpy(), rtol=1e-4, atol=1e-3)
    assert (d1 <= d2).all()


@pytest.mark.parametrize("isa", ISAS)
def test_fused_f32_reads_strided_rows_and_any_thread_count(isa):
    x, c = _mixture(2000, 96, 77, seed=1)
    wide = torch.cat([x, torch.randn(2000, 5)], dim=1)[:, :96]  # row stride 101, not contiguous
    assert not wide.is_contiguous()
    one, two = FusedAssigner(n_threads=1, isa=isa), FusedAssigner(n_threads=2, isa=isa)
    i1, v1 = one.assign(wide, one.prepare(c))
    i2, v2 = two.assign(x, two.prepare(c))
    assert torch.equal(i1, i2) and torch.equal(v1, v2)


@pytest.mark.parametrize("isa", ISAS)
def test_fused_f32_agrees_with_the_torch_path(isa):
    x, c = _mixture(3000, 128, 300, seed=2)
    t = TorchAssigner()
    f = FusedAssigner(isa=isa)
    ti, tv = t.assign(x, t.prepare(c))
    fi, fv = f.assign(x, f.prepare(c))
    assert (ti == fi).float().mean() > 0.999
    np.testing.assert_allclose(fv.numpy(), tv.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kind", INTS)
@pytest.mark.parametrize("sigmas", [6.0, None])
@pytest.mark.parametrize("n,d,k,offset", [(3000, 96, 37, 0.0), (3000, 128, 300, 0.0), (2001, 70, 129, 50.0),
                                          (1500, 385, 200, 0.0), (100, 65, 1, 0.0), (700, 9, 45, 0.0)])
def test_fused_int_matches_float64_argmin(n, d, k, offset, sigmas, kind):
    x, c = _mixture(n, d, k, seed=d + k, offset=offset)
    a = kind(TorchAssigner(), sigmas=sigmas)
    idx, dist = a.assign(x, a.prepare(c))
    assert (idx == _dist64(x, c).argmin(1)).all()
    _check_nearest(x, c, idx, dist)
    assert 0.0 <= a.settled_fraction() <= 1.0
    if k == 1:
        assert (idx == 0).all()


@pytest.mark.parametrize("kind", INTS)
def test_fused_int_near_ties_take_every_settling_route(kind):
    """Centroids closer together than the codes can resolve, next to a far one that sets the scale: every row is
    settled; with a few lanes holding more candidates than the lane state names (34 centroids over 32 lanes: int16
    keeps each lane's best two values and the best one's column, int8 its best three and the first two's columns) the
    kernel still settles them in the first pass, with many (160: five per lane) it lists candidates in a second
    pass, and past its candidate cap (256) it scans every centroid. The answer stays the float64 one."""
    g = torch.Generator().manual_seed(0)
    d = 128
    base = torch.randn(1, d, generator=g)
    x = base + torch.randn(400, d, generator=g)
    spread = 1e-3 if kind is FusedInt8Assigner else 1e-4  # int16 codes resolve ~30x finer
    for k, route in ((2, "rows_settled"), (34, "rows_settled"), (160, "rows_listed"), (600, "rows_all_centroids")):
        c = torch.cat([base + spread * torch.randn(k, d, generator=g), base + 5.0])
        a = kind(TorchAssigner())
        idx, dist = a.assign(x, a.prepare(c))
        assert a.settled_fraction() == 1.0
        assert getattr(a, route) > 0, route
        if k == 34:  # two deep lanes: no second pass
            assert a.rows_listed == 0
        # Some of these distances tie within fp32 rounding (1e-7 relative): nearest up to that resolution.
        assert _check_nearest(x, c, idx, dist) > 0.99


@pytest.mark.parametrize("kind", INTS)
@pytest.mark.parametrize("spread", [1.0, 1e-3, 1e-6])
def test_fused_int_rows_far_tighter_than_the_centroids(spread, kind):
    """Each row has its own scale, so rows spread 1e6x tighter than the centroids still quantise finely."""
    g = torch.Generator().manual_seed(4)
    c = torch.randn(50, 64, generator=g) * 100
    x = c.mean(0) + spread * torch.randn(300, 64, generator=g)
    a = kind(TorchAssigner())
    idx, dist = a.assign(x, a.prepare(c))
    assert (idx == _dist64(x, c).argmin(1)).all()
    np.testing.assert_allclose(dist.double().numpy(), _dist64(x, c).min(1).values.numpy(), rtol=1e-5)


@pytest.mark.parametrize("kind", INTS)
def test_fused_int_same_answer_on_any_thread_count(kind):
    x, c = _mixture(5000, 128, 500, seed=5)
    one, two = kind(TorchAssigner(), n_threads=1), kind(TorchAssigner(), n_threads=2)
    i1, v1 = one.assign(x, one.prepare(c))
    i2, v2 = two.assign(x, two.prepare(c))
    assert torch.equal(i1, i2) and torch.equal(v1, v2)
    assert one.rows_settled == two.rows_settled


def test_auto_picks_the_fused_kernels_and_falls_back_without_them(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) == "fused"
    assert isinstance(get_assigner("auto", cpu, "fp32", 128, 1000), FusedAssigner)
    if assign_mod.amx_bf16_fused(cpu):  # AMX: bf16 with its fused epilogue, int8 where its output costs most
        assert resolve_precision("auto", cpu, 128, 1000) == "bf16"
        assert isinstance(get_assigner("auto", cpu, "auto", 128, 1000), assign_mod.Bf16Assigner)
        assert isinstance(get_assigner("auto", cpu, "auto", 128, 10_000), FusedInt8Assigner)
    elif fused_available("int8"):
        assert resolve_precision("auto", cpu, 128, 1000) == "int8"
        assert isinstance(get_assigner("auto", cpu, "auto", 128, 1000), FusedInt8Assigner)
    elif not assign_mod.bf16_fast(cpu):  # AVX2 without a native bf16 or int8 path: int16
        assert resolve_precision("auto", cpu, 128, 1000) == "int16"
        assert isinstance(get_assigner("auto", cpu, "auto", 128, 1000), FusedInt16Assigner)
    assert resolve_precision("auto", cpu, 64, 1000) == "fp32"  # low dimension: no reduced precision
    monkeypatch.setattr(assign_mod, "fused_available", lambda kind="f32": False)
    assert resolve_backend("auto", cpu) in ("faiss", "torch")
    assert resolve_precision("auto", cpu, 128, 1000) != "int16"
    with pytest.raises(CurationInputError, match="fused"):
        resolve_backend("fused", cpu)
    with pytest.raises(CurationInputError, match="int16"):
        resolve_precision("int16", cpu, 128, 1000)


def test_isa_and_kernel_not_run_here_are_clear_errors():
    missing = [isa for isa in ("avx512", "avx2") if not fused_available(isa)]
    for isa in missing + ["sse2"]:
        with pytest.raises(RuntimeError, match="does not run here"):
            FusedAssigner(isa=isa)
    for kind in (FusedInt8Assigner, FusedInt16Assigner):
        if not fused_available(kind.codes):
            with pytest.raises(RuntimeError, match="does not run here"):
                kind(TorchAssigner())


def test_kmeans_with_the_fused_backend_equals_the_torch_backend():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((20, 96)).astype(np.float32) * 3
    x = (centers[rng.integers(0, 20, 4000)] + rng.standard_normal((4000, 96))).astype(np.float32)
    a = kmeans(x, 20, n_iters=8, seed=1, precision="fp32", backend="torch")
    for precision in ("fp32",) + tuple(p for p in ("int8", "int16") if fused_available(p)):
        b = kmeans(x, 20, n_iters=8, seed=1, precision=precision, backend="fused")
        assert (a.assignments == b.assignments).all()
        np.testing.assert_allclose(a.centroids, b.centroids, rtol=1e-4, atol=1e-4)
        assert abs(a.objective - b.objective) <= 1e-5 * a.objective
