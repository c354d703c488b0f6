"""Which assignment path runs here: the CPU's features, the backend and precision ``"auto"`` stands for (and the
measurements behind each choice), and :func:`get_assigner`, which builds the resolved path from the registries of
:mod:`sslcurate.assign.protocol`.
"""

from __future__ import annotations

import functools

import torch

from ..errors import CurationInputError
from ..fused import FusedAssigner, FusedInt8Assigner, FusedInt16Assigner, fused_available
from .exact import FaissAssigner, TorchAssigner, faiss_available
from .lowp import Bf16Assigner, Int8Assigner
from .protocol import BACKEND_REGISTRY, PRECISION_REGISTRY, Assigner, register_backend, register_precision

# The exact paths by backend name, then the reduced-precision wrappers by precision name (fp32: the exact path).
register_backend("torch", lambda device: TorchAssigner())
register_backend("faiss", FaissAssigner)
register_backend("fused", lambda device: FusedAssigner())
register_precision("fp32", lambda exact: exact)
# bf16 runs its epilogue in the extension where the AVX-512 kernels run (Bf16Assigner's default, decided here with
# the other hardware choices).
register_precision("bf16", lambda exact: Bf16Assigner(exact, fused=fused_available("avx512")))
register_precision("int8", lambda exact: FusedInt8Assigner(exact) if fused_available("int8") else Int8Assigner(exact))
register_precision("int16", FusedInt16Assigner)

BACKENDS = ("auto", *BACKEND_REGISTRY)  # ("auto", "torch", "faiss", "fused")
PRECISIONS = ("auto", *PRECISION_REGISTRY)  # ("auto", "fp32", "bf16", "int8", "int16")

# bf16 pays where the GEMM dominates; at d <= LOWP_MIN_DIM the bounded Lloyd loop (sslcurate.kmeans) skips most
# distance rows anyway and low-dimensional toys are where exact ties are common.
LOWP_MIN_DIM = 65
# The torch int8 path (CPUs with VNNI but without the fused kernel, e.g. AVX-VNNI only) settles more rows than
# bf16 (its residuals are larger), which the faster GEMM repays only where the GEMM is long: large K and d
# (benchmarks/bench_precision.py on a CPU with VNNI but without the fused kernel measures it). The
# thresholds sit on the side of the clear wins: at d=128, or K=1k, int8 did not beat bf16 beyond run-to-run noise.
INT8_MIN_DIM = 256
INT8_MIN_K = 4096
# On CPUs with AMX-BF16 (and the extension's AVX-512 epilogue) bf16 beats the fused int8 kernel wherever the
# GEMM is long enough to pay for writing and re-reading its (n, k) bf16 output, which the fused kernels never
# write: on the Emerald Rapids Xeon of benchmarks/results/precision_amx.md bf16 won at K=1k for every d and at
# K=10k for d=768; int8 won at K=10k for d=128 (where that output is most of bf16's cost) and, by ~10%, d=384.
# The thresholds sit between the measured points.
AMX_BF16_MAX_K = 4096  # up to this k, bf16 at any d > LOWP_MIN_DIM
AMX_BF16_MIN_DIM = 512  # above it, bf16 from this d


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where it cannot be read); read once per process, not on
    every k-means call."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_description() -> dict:
    """The CPU's model name and those of its flags that decide the kernels and precisions used here."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return {"cpu_model": model, "cpu_flags": [f for f in wanted if f in _cpu_flags()]}


def bf16_fast(device: torch.device | str = "cpu") -> bool:
    """True where bf16 GEMMs run natively and clearly faster than fp32: CUDA GPUs with bf16 support, CPUs with
    AVX512-BF16 or AMX (read from /proc/cpuinfo; elsewhere False, so the exact path is kept)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def int8_fast(device: torch.device | str = "cpu") -> bool:
    """True on CPUs with int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8), which torch's int8
    GEMM uses (benchmarks/bench_precision.py measures where that pays). False on GPUs: the int8 path is built and
    measured for CPUs, and GPUs keep bf16."""
    return torch.device(device).type == "cpu" and bool(_cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def amx_bf16_fused(device: torch.device | str = "cpu") -> bool:
    """True on CPUs with AMX-BF16 that run the bf16 path's fused epilogue (AVX-512 kernels of the extension)."""
    return (torch.device(device).type == "cpu" and "amx_bf16" in _cpu_flags() and fused_available("avx512"))


def resolve_backend(backend: str, device: torch.device | str = "cpu") -> str:
    """The backend ``"auto"`` stands for here: ``"fused"`` on CPUs that run the fused kernel (AVX-512 or AVX2 +
    FMA, :func:`sslcurate.fused.fused_available`), else faiss on the CPU when it is installed, else torch (and torch
    on GPUs, where the data stays on the device). All compute exact nearest centroids, but float rounding can
    break near-ties differently, so runs record the resolved name to be reproducible to the bit.

    Why this order on the CPU: the fused kernel never writes the ``(n, k)`` scores anywhere; k-means on it ran
    1.29-1.82x faster per iteration than faiss.Kmeans at N=100k, D in {128, 384, 768}, K in {1k, 10k}
    (benchmarks/results/precision.md). faiss runs its GEMM and argmin epilogue inside one parallel region per
    block of rows, where the torch path launches several parallel ops per tile; with other jobs on the cores
    torch's many short parallel regions collapse (measured 12 s vs 1.5 s for one pass at N=50k).
    """
    device = torch.device(device)
    if backend not in BACKENDS:
        raise CurationInputError(f"assignment backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "faiss" and not faiss_available():
        raise CurationInputError("backend='faiss' asked for, but faiss is not installed (pip install faiss-cpu)")
    if backend == "fused" and (device.type != "cpu" or not fused_available("f32")):
        raise CurationInputError(
            f"backend='fused' asked for on {device}, but it needs a CPU with AVX2 or AVX-512 and the "
            "sslcurate._kernels extension built at install time (pip install -e . with a C compiler); use 'auto'")
    if backend == "auto":
        if device.type == "cpu" and fused_available("f32"):
            return "fused"
        return "faiss" if device.type == "cpu" and faiss_available() else "torch"
    return backend


def resolve_precision(precision: str, device: torch.device | str = "cpu", dim: int | None = None,
                      k: int | None = None) -> str:
    """The precision ``"auto"`` stands for with ``dim`` features and ``k`` centroids: ``"bf16"`` on CPUs with AMX
    and the fused epilogue (:func:`amx_bf16_fused`) when ``dim >= LOWP_MIN_DIM`` and either
    ``k <= AMX_BF16_MAX_K`` or ``dim >= AMX_BF16_MIN_DIM``; else ``"int8"`` on CPUs that run
    the fused VNNI kernel (:func:`sslcurate.fused.fused_available`) when ``dim >= LOWP_MIN_DIM``; else ``"int8"``
    (the torch int8 GEMM) where :func:`int8_fast`, ``dim >= INT8_MIN_DIM`` and ``k >= INT8_MIN_K``; else
    ``"bf16"`` where :func:`bf16_fast` and ``dim >= LOWP_MIN_DIM``; else ``"int16"`` on CPUs that run the fused
    AVX2 int16 kernel when ``dim >= LOWP_MIN_DIM``; else ``"fp32"``. All give the exact fp32 nearest centroid up
    to ties within float rounding (the reduced-precision paths settle every row whose margin is not conclusive in
    fp32), but runs record the resolved name. ``"int8"`` or ``"int16"`` asked for on a GPU is an error, and
    ``"int16"`` where the fused kernel does not run."""
    if precision not in PRECISIONS:
        raise CurationInputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision in ("int8", "int16") and torch.device(device).type != "cpu":
        raise CurationInputError(f"precision={precision!r} is a CPU path; on {torch.device(device)} use "
                                 "'bf16' or 'auto'")
    if precision == "int16" and not fused_available("int16"):
        raise CurationInputError("precision='int16' needs the fused AVX2 kernel (a CPU with AVX2 + FMA and the "
                                 "sslcurate._kernels extension built at install time); use 'auto'")
    if precision == "auto":
        cpu = torch.device(device).type == "cpu"
        if (amx_bf16_fused(device) and (dim is None or dim >= LOWP_MIN_DIM)
                and (k is None or k <= AMX_BF16_MAX_K or (dim is not None and dim >= AMX_BF16_MIN_DIM))):
            return "bf16"  # AMX: see AMX_BF16_MAX_K
        if cpu and fused_available("int8") and (dim is None or dim >= LOWP_MIN_DIM):
            return "int8"  # the fused VNNI kernel: fastest at every (d, k) of benchmarks/bench_precision.py
        if dim is not None and k is not None and dim >= INT8_MIN_DIM and k >= INT8_MIN_K and int8_fast(device):
            return "int8"
        wide = dim is None or dim >= LOWP_MIN_DIM
        if bf16_fast(device) and wide:
            return "bf16"
        return "int16" if cpu and wide and fused_available("int16") else "fp32"
    return precision


def get_assigner(backend: str, device: torch.device, precision: str = "fp32", dim: int | None = None,
                 k: int | None = None) -> Assigner:
    """An exact assigner for ``backend`` (:func:`resolve_backend`), wrapped for ``precision``
    (:func:`resolve_precision`): ``"bf16"``, ``"int8"`` and ``"int16"`` wrap it in a :class:`Bf16Assigner`, a
    :class:`sslcurate.fused.FusedInt8Assigner` (CPUs with AVX512-VNNI and the built extension) or an
    :class:`Int8Assigner`, or a :class:`sslcurate.fused.FusedInt16Assigner` (AVX2); the exact assigner still
    serves the top-2 queries of the bounded loop.
    """
    exact = BACKEND_REGISTRY[resolve_backend(backend, device)](device)
    return PRECISION_REGISTRY[resolve_precision(precision, device, dim, k)](exact)
