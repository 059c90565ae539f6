"""Build script for the one optional C extension; everything else is in pyproject.toml.

The extension (``fastsam.ops._kernels``: the mask-region and NMS kernels) is optional: without a C
compiler the install still succeeds, and fastsam computes the same masks with numpy and the same NMS
with torchvision, only slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "fastsam.ops._kernels",
            sources=["src/fastsam/ops/_kernels.c"],
            # no FMA contraction: the kernel must round exactly like the numpy path
            extra_compile_args=["-O3", "-ffp-contract=off"],
            optional=True,
        )
    ]
)
