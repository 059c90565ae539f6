"""The BSDS500 boundary benchmark: per-image match counts at 99 thresholds, and ODS / OIS / AP / R50.

Protocol (Arbeláez et al., BSDS500 ``evaluation_bdry_image`` and ``collect_eval_bdry``), written from
its description:

* thresholds ``t_k = linspace(1/100, 99/100, 99)``; at each, the binary map ``pb >= t_k`` is thinned
  to one-pixel lines (morphological thinning, ``bwmorph(..., 'thin', inf)``);
* it is matched one-to-one against each annotator's boundary map, a pair being allowed when the
  pixels lie within ``0.0075`` of the image diagonal; a predicted pixel counts as correct when it
  matches any annotator (``cntP`` of ``sumP`` predicted pixels), and recall sums the matched ground
  truth pixels of every annotator (``cntR`` of ``sumR``);
* ODS: the best F over the thresholds of the counts summed over images; OIS: each image at its own
  best threshold, counts summed; both with BSDS's linear interpolation between neighbouring
  thresholds (100 steps). AP: BSDS's area under the ODS precision-recall curve (precision
  interpolated at recall 0, 0.01, ..., 1; 0 outside the curve). R50: recall at 50% precision on the
  same curve (interpolated linearly in precision, as Dollár's ``edgesEvalDir`` does; NaN when the
  precision never reaches 0.5).

**Matching.** BSDS's ``correspondPixels`` solves a sparse min-cost assignment (CSA) in which an
unmatched pixel costs 100 times the largest allowed distance, i.e. it maximises the number of
matched pairs within the distance; its sparse graph makes that an approximation. Here the
maximum-cardinality bipartite matching of the pixel pairs within the distance is solved exactly
(Hopcroft-Karp, ``scipy.sparse.csgraph.maximum_bipartite_matching``), so the counts equal BSDS's
wherever its approximation is exact and can only be higher (by the pixels its sparse graph misses).
Why not a library: the maintained Python ports of the benchmark (``pyEdgeEval``) compile BSDS's
GPL-2.0 C++ matcher and the Structured Edge toolbox's MSR-LA (non-commercial) NMS, neither of
which this Apache-2.0 package may depend on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ._deps import need

__all__ = ["MAX_DIST", "N_THRESHOLDS", "correspond", "image_counts", "summarise", "thresholds"]

N_THRESHOLDS = 99
MAX_DIST = 0.0075


def thresholds(n: int = N_THRESHOLDS) -> np.ndarray:
    """BSDS's thresholds: ``linspace(1/(n+1), 1 - 1/(n+1), n)`` (float64)."""
    return np.linspace(1.0 / (n + 1), 1.0 - 1.0 / (n + 1), n)


def correspond(pred: np.ndarray, gt: np.ndarray, max_dist_px: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of two boundary maps: (matched predicted pixels, matched ground-truth pixels).

    Args:
        pred, gt: (H, W) bool boundary maps. max_dist_px: largest allowed distance, pixels.

    A maximum-cardinality matching of the pairs at Euclidean distance <= ``max_dist_px`` (see the
    module docstring). Returns two (H, W) bool maps.
    """
    spatial = need("scipy.spatial")
    csgraph = need("scipy.sparse.csgraph")
    sparse = need("scipy.sparse")
    mp, mg = np.zeros(pred.shape, dtype=bool), np.zeros(gt.shape, dtype=bool)
    p, g = np.argwhere(pred), np.argwhere(gt)
    if len(p) == 0 or len(g) == 0:
        return mp, mg
    pairs = spatial.cKDTree(p).sparse_distance_matrix(spatial.cKDTree(g), max_dist_px, output_type="ndarray")
    if len(pairs) == 0:
        return mp, mg
    graph = sparse.csr_matrix((np.ones(len(pairs), dtype=np.int8), (pairs["i"], pairs["j"])), shape=(len(p), len(g)))
    match = csgraph.maximum_bipartite_matching(graph, perm_type="column")  # per predicted pixel: gt index or -1
    hit = match >= 0
    mp[p[hit, 0], p[hit, 1]] = True
    mg[g[match[hit], 0], g[match[hit], 1]] = True
    return mp, mg


def image_counts(
    pb: np.ndarray, ground_truth: Sequence[np.ndarray], n_thresholds: int = N_THRESHOLDS, max_dist: float = MAX_DIST
) -> np.ndarray:
    """BSDS counts of one image: (4, n_thresholds) int64 rows cntR, sumR, cntP, sumP.

    Args:
        pb: (H, W) edge strengths in [0, 1]. ground_truth: the annotators' (H, W) boundary maps
            (nonzero = boundary). max_dist: allowed distance as a fraction of the image diagonal.
    """
    thin = need("skimage.morphology").thin
    pb = np.asarray(pb, dtype=np.float64)
    gts = [np.asarray(g) > 0 for g in ground_truth]
    for g in gts:
        if g.shape != pb.shape:
            raise ValueError(f"ground truth of shape {g.shape} for an edge map of shape {pb.shape}")
    radius = max_dist * math.hypot(*pb.shape)
    out = np.zeros((4, n_thresholds), dtype=np.int64)
    gt_total = sum(int(g.sum()) for g in gts)
    for k, t in enumerate(thresholds(n_thresholds)):
        bmap = thin(pb >= t)
        acc = np.zeros(pb.shape, dtype=bool)
        cnt_r = 0
        for g in gts:
            mp, mg = correspond(bmap, g, radius)
            acc |= mp
            cnt_r += int(mg.sum())
        out[:, k] = (cnt_r, gt_total, int(acc.sum()), int(bmap.sum()))
    return out


def _rpf(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cnt_r, sum_r, cnt_p, sum_p = (np.asarray(c, dtype=np.float64) for c in counts)
    r = cnt_r / (sum_r + (sum_r == 0))
    p = cnt_p / (sum_p + (sum_p == 0))
    return r, p, _f(r, p)


def _f(r: np.ndarray, p: np.ndarray) -> np.ndarray:
    return 2 * p * r / ((p + r) + ((p + r) == 0))


def _best(t: np.ndarray, r: np.ndarray, p: np.ndarray) -> tuple[float, float, float, float]:
    """BSDS ``maxF``: the best (t, r, p, f) over the thresholds and 100 linear steps between neighbours."""
    d = np.linspace(0.0, 1.0, 100)
    ti = (t[1:, None] * d + t[:-1, None] * (1 - d)).ravel()
    ri = (r[1:, None] * d + r[:-1, None] * (1 - d)).ravel()
    pi = (p[1:, None] * d + p[:-1, None] * (1 - d)).ravel()
    ti, ri, pi = np.r_[t[0], ti], np.r_[r[0], ri], np.r_[p[0], pi]
    fi = _f(ri, pi)
    k = int(np.argmax(fi))  # first maximum, as BSDS's strict ">" keeps the earliest
    return float(ti[k]), float(ri[k]), float(pi[k]), float(fi[k])


def summarise(per_image: Sequence[np.ndarray] | np.ndarray) -> dict[str, float]:
    """ODS / OIS / AP / R50 (and the ODS threshold, precision and recall) from per-image counts.

    Args:
        per_image: (I, 4, T) counts of :func:`image_counts`, T thresholds of :func:`thresholds`.
    """
    counts = np.asarray(per_image, dtype=np.int64)
    if counts.ndim != 3 or counts.shape[0] == 0 or counts.shape[1] != 4:
        raise ValueError(f"expected per-image counts of shape (I, 4, T), got {counts.shape}")
    t = thresholds(counts.shape[2])
    best_sum = np.zeros(4, dtype=np.int64)
    for c in counts:  # OIS: each image's counts at its own best (non-interpolated) threshold
        best_sum += c[:, int(np.argmax(_rpf(c)[2]))]
    r, p, _ = _rpf(counts.sum(axis=0))
    ods_t, ods_r, ods_p, ods_f = _best(t, r, p)
    r_max, p_max, _ = _rpf(best_sum[:, None])
    # AP: precision at recall 0:0.01:1 by linear interpolation over the unique recalls, 0 outside
    ru, idx = np.unique(r, return_index=True)
    grid = np.linspace(0.0, 1.0, 101)
    if ru.size > 1:
        pi = np.interp(grid, ru, p[idx], left=np.nan, right=np.nan)
        ap = float(np.nan_to_num(pi, nan=0.0).sum() * 0.01)
    else:
        ap = 0.0
    # R50: recall where the precision (sorted, unique) reaches 0.5 (or its lowest value, if above)
    pu, jdx = np.unique(p, return_index=True)
    target = max(float(pu[0]), 0.5)
    r50 = float(np.interp(target, pu, r[jdx])) if target <= pu[-1] else math.nan
    return {
        "ods": ods_f,
        "ois": float(_f(r_max, p_max)[0]),
        "ap": ap,
        "r50": r50,
        "ods_threshold": ods_t,
        "ods_recall": ods_r,
        "ods_precision": ods_p,
    }
