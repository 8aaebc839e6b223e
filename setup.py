"""Builds pykaldi2's compiled extensions (C++17 + pybind11): the decoder (pykaldi2/hmm/csrc) and
the LF-MMI denominator kernel (pykaldi2/losses/csrc); the rest of the package metadata is in
pyproject.toml."""

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

# Both cores of a CI machine: the sources compile independently.
ParallelCompile("PYKALDI2_BUILD_JOBS", default=2).install()

SOURCES = ["module.cc", "graph.cc", "lattice.cc", "decoder.cc", "determinize.cc", "lattice_io.cc"]

setup(
    ext_modules=[
        Pybind11Extension(
            "pykaldi2.hmm._decoder",
            [f"pykaldi2/hmm/csrc/{s}" for s in SOURCES],
            include_dirs=["pykaldi2/hmm/csrc"],
            cxx_std=17,
            extra_compile_args=["-O2"],
        ),
        # -O3: the per-arc loops over the N sequences of a batch are vectorized
        Pybind11Extension(
            "pykaldi2.losses._den",
            ["pykaldi2/losses/csrc/den.cc"],
            cxx_std=17,
            extra_compile_args=["-O3"],
        ),
    ],
    cmdclass={"build_ext": build_ext},
)
