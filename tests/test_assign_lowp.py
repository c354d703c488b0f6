"""The reduced-precision assignment paths: bf16 or int8 GEMM candidates, near-ties settled exactly, so they match
the exact argmin."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from sslcurate import kmeans
import sslcurate.assign.resolve as assign_mod
from sslcurate.assign import (Bf16Assigner, Int8Assigner, TorchAssigner, _tile_top2, get_assigner,
                              resolve_precision)

from sslcurate.errors import CurationInputError
from sslcurate.fused import FusedInt8Assigner, fused_available

# The bf16 path twice where the CPU runs its fused epilogue (AVX-512): with it, and with the torch epilogue that
# GPUs and other CPUs run.
LOWP = [pytest.param(Bf16Assigner, id="bf16"), pytest.param(Int8Assigner, id="int8")] + (
    [pytest.param(functools.partial(Bf16Assigner, fused=False), id="bf16-torch-epilogue")]
    if fused_available("avx512") else [])


def _exact64(x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = torch.cdist(x.double(), c.double()) ** 2
    v, i = d.min(1)
    return i, v


def _assign(x, c, cls=Bf16Assigner, **kw):
    a = cls(TorchAssigner(), **kw)
    return a, *a.assign(x, a.prepare(c))


@pytest.mark.parametrize("cls", LOWP)
@pytest.mark.parametrize("sigmas", [6.0, None])
@pytest.mark.parametrize("d,k,offset", [(96, 37, 0.0), (128, 300, 0.0), (70, 129, 50.0), (300, 200, 0.0)])
def test_lowp_matches_float64_argmin(d, k, offset, sigmas, cls):
    g = torch.Generator().manual_seed(d + k)
    means = torch.randn(k // 2, d, generator=g) * 2
    x = means[torch.randint(0, k // 2, (3000,), generator=g)] + torch.randn(3000, d, generator=g) + offset
    c = x[torch.randperm(3000, generator=g)[:k]] + 0.01 * torch.randn(k, d, generator=g)
    a, idx, dist = _assign(x, c, cls, sigmas=sigmas)
    ref_i, ref_v = _exact64(x, c)
    # Rows where float64 itself sees a tie below fp32 resolution may go either way; none is expected here.
    assert (idx == ref_i).all()
    np.testing.assert_allclose(dist.double().numpy(), ref_v.numpy(), rtol=2e-5, atol=1e-4 * (1 + offset ** 2))
    assert 0.0 <= a.settled_fraction() < 1.0


@pytest.mark.parametrize("cls", LOWP)
def test_near_ties_below_lowp_resolution_are_settled_exactly(cls):
    """Two centroids whose distances to every point differ by ~1e-4 relative: neither bf16 (8 significant bits)
    nor int8 can tell them apart, the settling pass must, for every row."""
    g = torch.Generator().manual_seed(0)
    d = 128
    base = torch.randn(1, d, generator=g)
    direction = torch.nn.functional.normalize(torch.randn(1, d, generator=g), dim=1)
    c = torch.cat([base + 1e-3 * direction, base - 1e-3 * direction, base + 5.0])
    x = base + torch.randn(500, d, generator=g)
    a, idx, _ = _assign(x, c, cls)
    ref_i, _ = _exact64(x, c)
    assert (idx == ref_i).all()
    assert a.settled_fraction() > 0.9  # these rows really needed it
    assert set(idx.tolist()) == {0, 1}


@pytest.mark.parametrize("cls", LOWP)
def test_column_and_row_blocks_combine(cls):
    """K spread over several column blocks (and rows over several row blocks) gives the same answer."""
    g = torch.Generator().manual_seed(3)
    x, c = torch.randn(700, 80, generator=g), torch.randn(333, 80, generator=g)
    _, idx_small, d_small = _assign(x, c, cls, block_rows=100, block_cols=128)
    _, idx_big, d_big = _assign(x, c, cls)
    assert torch.equal(idx_small, idx_big)
    assert torch.allclose(d_small, d_big)
    assert (idx_big == _exact64(x, c)[0]).all()


def test_tile_top2_matches_topk():
    g = torch.Generator().manual_seed(1)
    vals = torch.rand(57, 64 * 5, generator=g).bfloat16()
    vals[3, 17] = vals[3, 200]  # an exact tie: the second-best equals the best
    idx, v1, v2, slot_min = _tile_top2(vals.view(torch.int16))
    assert torch.equal(slot_min, vals.view(torch.int16).view(57, 5, 64).amin(1).to(torch.int32))
    top = torch.topk(vals.float(), 2, dim=1, largest=False)
    assert torch.equal(vals.float().gather(1, idx[:, None])[:, 0], top.values[:, 0])
    as_float = lambda b: b.to(torch.int16).view(torch.bfloat16).float()  # noqa: E731
    assert torch.equal(as_float(v1), top.values[:, 0])
    assert torch.equal(as_float(v2), top.values[:, 1])


def test_tile_top2_int32_tiles():
    """int32 codes (the int8 path), negative ones and exact ties included."""
    g = torch.Generator().manual_seed(2)
    codes = torch.randint(-2 ** 30, 2 ** 30, (41, 64 * 3), generator=g, dtype=torch.int32)
    codes[5, 7] = codes[5, 150] = codes[5].min() - 1  # a tie for the best
    idx, v1, v2, slot_min = _tile_top2(codes)
    assert slot_min.dtype == v1.dtype == torch.int64
    assert torch.equal(slot_min, codes.view(41, 3, 64).amin(1).long())
    top = torch.topk(codes.long(), 2, dim=1, largest=False)
    assert torch.equal(codes.long().gather(1, idx[:, None])[:, 0], top.values[:, 0])
    assert torch.equal(v1, top.values[:, 0]) and torch.equal(v2, top.values[:, 1])


@pytest.mark.parametrize("spread", [1.0, 1e-2, 1e-3, 1e-5])
def test_int8_blocks_spread_below_the_centroids(spread):
    """The codes grow as the rows' spread shrinks next to the centroids'; at 1e5x tighter they would overflow
    int32 and the block goes to the exact assigner. The answer is the exact one either way."""
    g = torch.Generator().manual_seed(4)
    c = torch.randn(50, 64, generator=g) * 100
    x = c.mean(0) + spread * torch.randn(300, 64, generator=g)
    a, idx, dist = _assign(x, c, Int8Assigner)
    if spread <= 1e-5:
        assert a.settled_fraction() == 1.0
    ref_i, ref_v = _exact64(x, c)
    assert (idx == ref_i).all()
    np.testing.assert_allclose(dist.double().numpy(), ref_v.numpy(), rtol=1e-5)


def test_kmeans_bf16_equals_fp32_run():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((20, 96)).astype(np.float32) * 3
    x = (centers[rng.integers(0, 20, 4000)] + rng.standard_normal((4000, 96))).astype(np.float32)
    a = kmeans(x, 20, n_iters=8, seed=1, precision="fp32", backend="torch")
    for precision in ("bf16", "int8"):
        b = kmeans(x, 20, n_iters=8, seed=1, precision=precision, backend="torch")
        assert (a.assignments == b.assignments).all()
        np.testing.assert_allclose(a.centroids, b.centroids, rtol=1e-4, atol=1e-4)
        assert abs(a.objective - b.objective) <= 1e-5 * a.objective


def test_precision_resolution():
    for p in ("fp32", "bf16", "int8"):
        assert resolve_precision(p) == p
    assert resolve_precision("auto", "cpu", dim=2) == "fp32"  # low dimension: exact path always
    assert resolve_precision("auto", "cpu", dim=384) in ("fp32", "bf16", "int8", "int16")
    with pytest.raises(CurationInputError, match="precision"):
        resolve_precision("fp16")
    for p in ("int8", "int16"):
        with pytest.raises(CurationInputError, match="CPU path"):
            resolve_precision(p, "cuda", dim=384, k=10_000)
    assert isinstance(get_assigner("torch", torch.device("cpu"), "bf16", 128), Bf16Assigner)
    assert isinstance(get_assigner("torch", torch.device("cpu"), "int8", 128),
                      FusedInt8Assigner if fused_available("int8") else Int8Assigner)
    assert isinstance(get_assigner("torch", torch.device("cpu"), "fp32", 128), TorchAssigner)


@pytest.mark.parametrize("flags,d,k,expected", [
    ({"avx512_vnni", "avx512_bf16"}, 384, 10_000, "int8"),
    ({"avx512_vnni", "avx512_bf16"}, 384, 1000, "bf16"),  # small k: margins too wide for int8 to pay
    ({"avx512_vnni", "avx512_bf16"}, 128, 10_000, "bf16"),
    ({"avx512_vnni", "avx512_bf16"}, 384, None, "bf16"),
    ({"avx512_vnni"}, 384, 10_000, "int8"),
    ({"avx512_vnni"}, 128, 10_000, "fp32"),
    ({"amx_bf16", "amx_int8"}, 768, 5000, "int8"),
    (set(), 768, 10_000, "fp32"),
])
def test_auto_precision_follows_the_cpu(monkeypatch, flags, d, k, expected):
    """Without the fused kernels (tests/test_fused.py covers them), auto follows the CPU's flags."""
    monkeypatch.setattr(assign_mod, "_cpu_flags", lambda: set(flags))
    monkeypatch.setattr(assign_mod, "fused_available", lambda kind="f32": False)
    assert resolve_precision("auto", "cpu", dim=d, k=k) == expected


def test_kmeans_plusplus_bf16_picks_rows_and_separates_blobs():
    """bf16 k-means++ steps: centres are rows of x, deterministic from the seed, and on well-separated blobs
    (far from the mean, so the centring matters) it seeds one centre per blob, as fp32 does."""
    from sslcurate.kmeans import kmeans_plusplus

    g = np.random.default_rng(0)
    means = g.standard_normal((12, 80)) * 10 + 40
    x = torch.from_numpy((means[g.integers(0, 12, 3000)] + g.standard_normal((3000, 80))).astype(np.float32))
    a = kmeans_plusplus(x, 12, np.random.default_rng(1), precision="bf16")
    b = kmeans_plusplus(x, 12, np.random.default_rng(1), precision="bf16")
    assert torch.equal(a, b)
    rows = {tuple(r) for r in x.numpy().round(5).tolist()}
    assert all(tuple(c) in rows for c in a.numpy().round(5).tolist())
    blob_of = torch.cdist(a.double(), torch.from_numpy(means)).argmin(1)
    assert len(set(blob_of.tolist())) == 12


@pytest.mark.skipif(not fused_available("avx512"), reason="the bf16 path's fused epilogue needs AVX-512")
@pytest.mark.parametrize("block_cols", [128, 4096])
def test_bf16_fused_epilogue_equals_torch_epilogue(block_cols):
    """The extension's passes around the bf16 GEMM give the torch epilogue's answer: same centroids, the same
    exact distances, the same rows settled (up to the order of a few fp32 sums in the bound)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(5000, 200, generator=g) * 3 + 10
    c = x[:700] + 0.1 * torch.randn(700, 200, generator=g)
    fused = Bf16Assigner(TorchAssigner(), block_cols=block_cols)
    plain = Bf16Assigner(TorchAssigner(), block_cols=block_cols, fused=False)
    assert fused.fused and not plain.fused
    i1, d1 = fused.assign(x, fused.prepare(c))
    i2, d2 = plain.assign(x, plain.prepare(c))
    assert torch.equal(i1, i2)
    assert torch.equal(i1, _exact64(x, c)[0])
    torch.testing.assert_close(d1, d2, rtol=1e-5, atol=1e-3)
    assert fused.settled_fraction() > 0.01
    assert abs(fused.settled_fraction() - plain.settled_fraction()) < 0.01


@pytest.mark.parametrize("flags,d,k,expected", [
    ({"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni"}, 128, 1000, "bf16"),
    ({"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni"}, 128, 10_000, "int8"),  # bf16's output costs most
    ({"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni"}, 384, 10_000, "int8"),
    ({"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni"}, 768, 10_000, "bf16"),
    ({"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni"}, 768, None, "bf16"),
    ({"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni"}, 64, 1000, "fp32"),
    ({"avx512_bf16", "avx512_vnni"}, 768, 1000, "int8"),  # no AMX: the fused int8 kernel everywhere
])
def test_auto_precision_with_the_fused_kernels(monkeypatch, flags, d, k, expected):
    """With the extension's AVX-512 and VNNI kernels, auto picks bf16 on AMX CPUs where it measured faster, the
    fused int8 kernel elsewhere (benchmarks/results/precision_amx.md, precision.md)."""
    monkeypatch.setattr(assign_mod, "_cpu_flags", lambda: set(flags))
    monkeypatch.setattr(assign_mod, "fused_available", lambda kind="f32": kind in ("f32", "avx512", "int8"))
    assert resolve_precision("auto", "cpu", dim=d, k=k) == expected
