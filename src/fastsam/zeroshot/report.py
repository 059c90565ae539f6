"""The paper's figures, the printed comparison rows and ``OUT/metrics.json`` of every zero-shot task.

Figures from Zhao et al. 2023 (arXiv 2306.12156v1): Table 2 (BSDS500 edges), Table 3 (COCO
proposals), Tables 4 and 5 (LVIS v1 box / mask proposals, AR@1000), Table 6 (instance segmentation
with ViTDet-H boxes). The paper writes BSDS figures as fractions and COCO/LVIS ones as percentages;
the rows are printed in the paper's scale, metrics.json always holds fractions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io.atomic import write_atomic
from ..train.evaluate import metrics_json

__all__ = ["PAPER", "format_rows", "write_metrics"]

#: task -> metrics.json key -> the paper's FastSAM figure (fractions)
PAPER: dict[str, dict[str, float]] = {
    "edges": {"ods": 0.750, "ois": 0.790, "ap": 0.793, "r50": 0.903},
    "proposals": {"AR@10": 0.157, "AR@100": 0.473, "AR@1000": 0.637, "AUC": 0.322},
    "proposals-lvis": {
        "AR@1000": 0.571,
        "AR_small@1000": 0.443,
        "AR_medium@1000": 0.771,
        "AR_large@1000": 0.853,
        "mask_AR@1000": 0.497,
        "mask_AR_small@1000": 0.356,
        "mask_AR_medium@1000": 0.727,
        "mask_AR_large@1000": 0.776,
    },
    "instances": {"AP": 0.379, "APs": 0.239, "APm": 0.434, "APl": 0.500},
    "instances-lvis": {"AP": 0.345, "APs": 0.246, "APm": 0.462, "APl": 0.508},
}


def _cell(value: Any, percent: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.1f}" if percent else f"{value:.3f}"


def _label(key: str) -> str:
    """``mask_AR_small@1000`` -> ``mask ARs@1000`` (column headers stay narrow)."""
    for long, short in (("_small", "s"), ("_medium", "m"), ("_large", "l"), ("_rare", "r"), ("_common", "c")):
        key = key.replace(f"AR{long}@", f"AR{short}@")
    return key.replace("AR_frequent@", "ARf@").replace("mask_", "mask ")


def format_rows(metrics: Mapping[str, Any], task: str, keys: Sequence[str] | None = None) -> str:
    """A header, our row and the paper's row (``-`` where the paper gives no figure)."""
    paper = PAPER.get(task, {})
    keys = list(keys or paper)
    percent = not task.startswith("edges")
    labels = [_label(k) for k in keys]
    width = max(9, *(len(x) + 2 for x in labels))
    lines = [f"{'':<16}" + "".join(x.rjust(width) for x in labels)]
    lines.append(f"{'ours':<16}" + "".join(_cell(metrics.get(k), percent).rjust(width) for k in keys))
    lines.append(
        f"{'paper FastSAM':<16}" + "".join((_cell(paper[k], percent) if k in paper else "-").rjust(width) for k in keys)
    )
    return "\n".join(lines)


def write_metrics(out: Path, record: Mapping[str, Any]) -> Path:
    """``out/metrics.json`` (strict JSON, NaN -> null), written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "metrics.json"
    write_atomic(path, metrics_json(record))
    return path
