"""Options of ``fastsam segment`` and ``fastsam prompt`` for huge images: tiles (see ``fastsam.tiling``)."""

from __future__ import annotations

import argparse

from ._values import non_negative_int, positive_int

__all__ = ["add_tile_options"]


def add_tile_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "huge images",
        "--tile segments each image by overlapping SIZE x SIZE tiles (each letterboxed to --imgsz: "
        "SIZE = --imgsz is full resolution) plus a downscaled whole-image pass, merged into one set of "
        "masks: masks cut by tile borders are joined, duplicates removed by mask IoU; records in the "
        "image's own pixels. --batch then counts tiles.",
    )
    g.add_argument("--tile", type=positive_int, metavar="SIZE", help="tile side in pixels (default: no tiles)")
    g.add_argument(
        "--tile-overlap",
        type=non_negative_int,
        metavar="PX",
        help="pixels shared by neighbouring tiles (default SIZE/4)",
    )
