"""Data utilities: deterministic synthetic scenes in the SA-1B layout (:mod:`fastsam.data.synth`)."""

from .synth import render_scene, write_dataset

__all__ = ["render_scene", "write_dataset"]
