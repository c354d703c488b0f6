"""Builds the optional C extension ``sslcurate._kernels`` (fused AVX-512 nearest-centroid kernels).

Everything else is declared in pyproject.toml. The extension is optional: where it cannot be compiled (no C
compiler, no OpenMP) the install still succeeds and sslcurate.assign uses faiss / torch instead.
"""
import platform

from setuptools import Extension, setup

x86 = platform.machine().lower() in ("x86_64", "amd64")
setup(ext_modules=[Extension(
    "sslcurate._kernels", ["src/sslcurate/_kernels.c"], optional=True,
    # No -march: the kernels carry their own target attributes and are chosen at run time from cpu_features(),
    # so one build runs on every x86-64 CPU.
    extra_compile_args=["-O3", "-fopenmp", "-std=c11", "-ffp-contract=off"], extra_link_args=["-fopenmp"],
)] if x86 else [])
