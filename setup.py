"""Build script for the one optional C extension; everything else is in pyproject.toml.

The extension (``fastsam.ops._regions``, the mask-region kernel) is optional: without a C compiler the
install still succeeds and ``fastsam.ops.masks`` computes the same masks with numpy, only slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "fastsam.ops._regions",
            sources=["src/fastsam/ops/_regions.c"],
            # no FMA contraction: the kernel must round exactly like the numpy path
            extra_compile_args=["-O3", "-ffp-contract=off"],
            optional=True,
        )
    ]
)
