"""Nearest-centroid assignment backends: the fused AVX-512 / AVX2 kernel (:mod:`sslcurate.fused`), a tiled torch
GEMM + argmin, and faiss (CPU or GPU), exact in fp32; and reduced-precision assigners (bf16, int8 or int16
candidates, near-ties settled exactly) around any of them.

All take a chunk ``x: (n, d)`` float32 tensor and return ``(assignments: (n,) int64, sq_distances: (n,)
float32)`` from :meth:`assign`, and additionally the squared distance to the second-closest centroid from
:meth:`assign_top2` (what the bounded Lloyd loop in :mod:`sslcurate.kmeans` needs to set its lower bounds): the
:class:`~sslcurate.assign.protocol.Assigner` protocol, whose implementations are registered by backend and
precision name.

- :mod:`.protocol`: the interface and the registries;
- :mod:`.exact`: the exact torch and faiss paths (the fused one is :class:`sslcurate.fused.FusedAssigner`);
- :mod:`.lowp`: the torch reduced-precision paths (:class:`Bf16Assigner`, :class:`Int8Assigner`);
- :mod:`.resolve`: the CPU's features, what ``"auto"`` stands for, and :func:`get_assigner`.
"""

from ..fused import FusedAssigner, FusedInt8Assigner, FusedInt16Assigner, fused_available
from .exact import (CPU_BLOCK_COLS, CPU_BLOCK_ROWS, GPU_BLOCK_COLS, GPU_BLOCK_ROWS, FaissAssigner, TorchAssigner,
                    assign_chunk, assign_chunk_top2, faiss_available)
from .lowp import (BF16_BLOCK_COLS, BF16_BLOCK_ROWS, FUSED_TILE_COLS, Bf16Assigner, Int8Assigner, _bits_to_float,
                   _SettlingAssigner, _tile_top2)
from .protocol import BACKEND_REGISTRY, PRECISION_REGISTRY, Assigner, register_backend, register_precision
from .resolve import (AMX_BF16_MAX_K, AMX_BF16_MIN_DIM, BACKENDS, INT8_MIN_DIM, INT8_MIN_K, LOWP_MIN_DIM, PRECISIONS,
                      _cpu_flags, amx_bf16_fused, bf16_fast, cpu_description, get_assigner, int8_fast,
                      resolve_backend, resolve_precision)

__all__ = ["AMX_BF16_MAX_K", "AMX_BF16_MIN_DIM", "BACKENDS", "BACKEND_REGISTRY", "BF16_BLOCK_COLS", "BF16_BLOCK_ROWS",
           "CPU_BLOCK_COLS", "CPU_BLOCK_ROWS", "FUSED_TILE_COLS", "GPU_BLOCK_COLS", "GPU_BLOCK_ROWS", "INT8_MIN_DIM",
           "INT8_MIN_K", "LOWP_MIN_DIM", "PRECISIONS", "PRECISION_REGISTRY", "Assigner", "Bf16Assigner",
           "FaissAssigner", "FusedAssigner", "FusedInt8Assigner", "FusedInt16Assigner", "Int8Assigner",
           "TorchAssigner", "_SettlingAssigner", "_bits_to_float", "_cpu_flags", "_tile_top2", "amx_bf16_fused",
           "assign_chunk", "assign_chunk_top2", "bf16_fast", "cpu_description", "faiss_available", "fused_available",
           "get_assigner", "int8_fast", "register_backend", "register_precision", "resolve_backend",
           "resolve_precision"]
