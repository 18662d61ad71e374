"""Segmentation metrics shared by training (validation scores), evaluate.py and the benchmarks.

All functions take masks of the same shape (any dtype; nonzero = foreground) and return plain
Python floats and ints, so their results go straight into CSV and JSON.

    pixel_scores(pred, gt)            # dice, iou, precision, recall, accuracy
    auc(prob, gt)                     # area under the ROC curve of a probability map
    hd95(pred, gt, spacing=0.156)     # 95th-percentile Hausdorff distance, here in um
    cldice(pred, gt), skeleton_scores(pred, gt, tol=2)   # thin structures
    object_scores(pred, gt)           # connected components matched at IoU >= 0.5
    spot_scores(pred, points_yx)      # real-spot scoring of ../shared/realdata/README.md
    separate_touching(labels)         # the one rule for the gap between touching objects

Empty-mask conventions, one rule for every count-based score: a precision or recall whose
denominator is empty is 1 when the other side is empty too (a perfect answer to an empty
question) and 0 otherwise; Dice, IoU and F1 are 1 when both sides are empty. Distances (HD95)
are 0 when both masks are empty and inf when exactly one is (nothing to measure to). AUC is nan
when the ground truth holds a single class (ROC undefined).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def confusion(pred, gt) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) pixel counts."""
    p = np.asarray(pred).astype(bool)
    g = np.asarray(gt).astype(bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground truth shape {g.shape}")
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p & ~g))
    fn = int(np.count_nonzero(~p & g))
    tn = int(p.size - tp - fp - fn)
    return tp, fp, fn, tn


def scores_from_counts(tp: int, fp: int, fn: int, tn: int = 0) -> dict:
    """Dice, IoU, precision, recall and accuracy from pixel counts (summed over a batch is fine)."""
    def ratio(num, den):
        return float(num) / den if den else 1.0

    return {
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "iou": ratio(tp, tp + fp + fn),
        "precision": ratio(tp, tp + fp) if (tp + fp) else (1.0 if fn == 0 else 0.0),
        "recall": ratio(tp, tp + fn) if (tp + fn) else (1.0 if fp == 0 else 0.0),
        "accuracy": ratio(tp + tn, tp + fp + fn + tn),
    }


def pixel_scores(pred, gt) -> dict:
    """Dice, IoU, precision, recall, accuracy of one binary prediction against its ground truth."""
    return scores_from_counts(*confusion(pred, gt))


def _binary_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool arrays, checked to have the same shape."""
    p = np.asarray(pred) != 0
    g = np.asarray(gt) != 0
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground truth shape {g.shape}")
    return p, g


def _prf(tp: int, fp: int, fn: int) -> dict:
    """Precision, recall and F1 of matched counts, with the module's empty conventions."""
    s = scores_from_counts(tp, fp, fn)
    return {"precision": s["precision"], "recall": s["recall"], "f1": s["dice"]}


def _harmonic(a: float, b: float) -> float:
    """Harmonic mean of two scores in [0, 1]; 0 when both are 0."""
    return 2.0 * a * b / (a + b) if (a + b) > 0 else 0.0


def _covered(part: int, total: int, other_empty: bool) -> float:
    """part / total, or the empty convention (1 if the other side is empty too, else 0)."""
    if total:
        return part / total
    return 1.0 if other_empty else 0.0


# ---------------------------------------------------------------- pixels

def auc(prob, gt) -> float:
    """Area under the ROC curve of a probability (or any score) map against a binary ground truth.

    nan when the ground truth is all foreground or all background: the ROC curve needs both.
    """
    from sklearn.metrics import roc_auc_score  # heavy import, only when AUC is asked for

    s = np.asarray(prob, dtype=np.float64)
    g = np.asarray(gt) != 0
    if s.shape != g.shape:
        raise ValueError(f"probability map shape {s.shape} differs from ground truth shape {g.shape}")
    if g.all() or not g.any():
        return float("nan")
    if not np.isfinite(s).all():
        raise ValueError("probability map contains NaN or inf")
    return float(roc_auc_score(g.ravel(), s.ravel()))


# ---------------------------------------------------------------- boundary

def boundary(mask) -> np.ndarray:
    """Foreground pixels with at least one background 4-neighbour (the image edge counts as background)."""
    m = np.asarray(mask) != 0
    inner = ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(m.ndim, 1),
                                   border_value=0)
    return m & ~inner


def _spacing(spacing, ndim: int) -> tuple[float, ...]:
    """Per-axis pixel size from a scalar or a sequence; must be positive."""
    sp = np.broadcast_to(np.asarray(spacing, dtype=float), (ndim,))
    if not (np.isfinite(sp).all() and (sp > 0).all()):
        raise ValueError(f"spacing must be positive, got {spacing!r}")
    return tuple(float(v) for v in sp)


def surface_distances(pred, gt, spacing=1.0) -> tuple[np.ndarray, np.ndarray]:
    """Distances from every boundary pixel of pred to the nearest boundary pixel of gt, and back.

    Distances are in the unit of `spacing` (pixel size, scalar or one value per axis).
    Both masks must be non-empty.
    """
    p, g = _binary_pair(pred, gt)
    if not p.any() or not g.any():
        raise ValueError("surface distances need two non-empty masks")
    sp = _spacing(spacing, p.ndim)
    bp, bg = boundary(p), boundary(g)
    to_gt = ndimage.distance_transform_edt(~bg, sampling=sp)
    to_pred = ndimage.distance_transform_edt(~bp, sampling=sp)
    return to_gt[bp], to_pred[bg]


def hd95(pred, gt, spacing=1.0, percentile: float = 95.0) -> float:
    """95th-percentile symmetric Hausdorff distance between the two mask boundaries.

    The larger of the two directed 95th percentiles (pred -> gt and gt -> pred boundary
    distances), as in MONAI's HD95; `percentile=100` gives the classical Hausdorff distance.
    Unit: that of `spacing` (1.0 = pixels; the pixel size in um gives um).
    0 when both masks are empty, inf when exactly one is.
    """
    p, g = _binary_pair(pred, gt)
    if not p.any() and not g.any():
        return 0.0
    if not p.any() or not g.any():
        return float("inf")
    d_pg, d_gp = surface_distances(p, g, spacing)
    return float(max(np.percentile(d_pg, percentile), np.percentile(d_gp, percentile)))


# ---------------------------------------------------------------- thin structures

def skeleton(mask) -> np.ndarray:
    """One-pixel-wide centrelines of a mask (skimage skeletonize), as bool."""
    from skimage.morphology import skeletonize

    m = np.asarray(mask) != 0
    return skeletonize(m) if m.any() else m


def cldice(pred, gt) -> float:
    """Centreline Dice (Shit et al., CVPR 2021): harmonic mean of topology precision and sensitivity.

    Topology precision = fraction of the predicted skeleton inside the ground-truth mask;
    topology sensitivity = fraction of the ground-truth skeleton inside the predicted mask.
    """
    p, g = _binary_pair(pred, gt)
    sp, sg = skeleton(p), skeleton(g)
    t_prec = _covered(int(np.count_nonzero(sp & g)), int(np.count_nonzero(sp)), not g.any())
    t_sens = _covered(int(np.count_nonzero(sg & p)), int(np.count_nonzero(sg)), not p.any())
    return _harmonic(t_prec, t_sens)


def skeleton_scores(pred, gt, tol: float = 2.0) -> dict:
    """Centreline precision/recall/F1 with a tolerance in pixels.

    precision: fraction of predicted skeleton pixels within `tol` px of the ground-truth skeleton;
    recall: fraction of ground-truth skeleton pixels within `tol` px of the predicted skeleton.
    Forgives a filament drawn a pixel or two off, which pixel Dice punishes on thin structures.
    """
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    p, g = _binary_pair(pred, gt)
    sp, sg = skeleton(p), skeleton(g)
    n_p, n_g = int(np.count_nonzero(sp)), int(np.count_nonzero(sg))
    hit_p = hit_g = 0
    if n_p and n_g:
        hit_p = int(np.count_nonzero(ndimage.distance_transform_edt(~sg)[sp] <= tol))
        hit_g = int(np.count_nonzero(ndimage.distance_transform_edt(~sp)[sg] <= tol))
    precision = _covered(hit_p, n_p, n_g == 0)
    recall = _covered(hit_g, n_g, n_p == 0)
    return {"precision": precision, "recall": recall, "f1": _harmonic(precision, recall)}


# ---------------------------------------------------------------- matching

def assign_pairs(rows, cols, cost) -> list[tuple[int, int]]:
    """One-to-one matching among candidate pairs: as many pairs as possible, then least total cost.

    rows, cols: indices of the candidate pairs; cost: their costs (>= 0, smaller is better).
    Solved with the Hungarian algorithm on the candidates' rows and columns, non-candidates
    costing more than any full set of candidates, so they are chosen only where nothing else fits
    and are dropped from the answer. Returns (row, col) pairs.
    """
    from scipy.optimize import linear_sum_assignment

    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    cost = np.asarray(cost, dtype=np.float64)
    if rows.size == 0:
        return []
    ur, ri = np.unique(rows, return_inverse=True)
    uc, ci = np.unique(cols, return_inverse=True)
    big = (float(cost.max()) + 1.0) * (min(ur.size, uc.size) + 1)
    matrix = np.full((ur.size, uc.size), big)
    np.minimum.at(matrix, (ri, ci), cost)
    r, c = linear_sum_assignment(matrix)
    keep = matrix[r, c] < big
    return [(int(ur[a]), int(uc[b])) for a, b in zip(r[keep], c[keep])]


def match_points(pred_yx, gt_yx, tol: float = 3.0) -> list[tuple[int, int]]:
    """Match predicted to ground-truth points one-to-one, only within `tol` (inclusive, same unit).

    Maximum number of matches, ties broken by the smallest total distance (Hungarian algorithm).
    Returns (pred index, gt index) pairs.
    """
    from scipy.spatial import cKDTree

    p = np.asarray(pred_yx, dtype=float).reshape(-1, 2)
    g = np.asarray(gt_yx, dtype=float).reshape(-1, 2)
    if len(p) == 0 or len(g) == 0:
        return []
    near = cKDTree(p).sparse_distance_matrix(cKDTree(g), tol, output_type="ndarray")
    return assign_pairs(near["i"], near["j"], near["v"])


def point_scores(pred_yx, gt_yx, tol: float = 3.0) -> dict:
    """Precision, recall, F1 of predicted points against ground-truth points matched within `tol`."""
    n_pred, n_gt = len(np.asarray(pred_yx).reshape(-1, 2)), len(np.asarray(gt_yx).reshape(-1, 2))
    tp = len(match_points(pred_yx, gt_yx, tol))
    return {**_prf(tp, n_pred - tp, n_gt - tp), "n_pred": n_pred, "n_gt": n_gt, "matches": tp}


def _structure(ndim: int, connectivity: int) -> np.ndarray:
    """Neighbourhood for labelling: connectivity 1 = faces (4 in 2D), ndim = full (8 in 2D)."""
    if not 1 <= connectivity <= ndim:
        raise ValueError(f"connectivity must be 1..{ndim}, got {connectivity}")
    return ndimage.generate_binary_structure(ndim, connectivity)


def label_objects(mask, connectivity: int = 2) -> tuple[np.ndarray, int]:
    """Instance labels 1..n and n.

    An integer image holding more than one nonzero value is taken as an instance label image
    (e.g. a StarDist mask2d.tif) and renumbered 1..n; anything else (bool, 0/1, 0/255, float)
    is binarised and split into connected components (connectivity 2 = 8-neighbours in 2D).
    """
    a = np.asarray(mask)
    if np.issubdtype(a.dtype, np.integer):
        values, inverse = np.unique(a, return_inverse=True)
        nonzero = values != 0
        if np.count_nonzero(nonzero) > 1:
            lut = (np.cumsum(nonzero) * nonzero).astype(np.int32)  # k-th nonzero value -> k, 0 -> 0
            return lut[inverse.reshape(a.shape)], int(np.count_nonzero(nonzero))
    labels, n = ndimage.label(a != 0, structure=_structure(a.ndim, connectivity))
    return labels, int(n)


def separate_touching(labels) -> np.ndarray:
    """uint8 0/1 mask of a label image with a gap wherever two labels touch: one 8-connected component each.

    The rule, shared by the vesicle generator (its masks) and the predictor (its split objects): a
    pixel of label L is cleared when any of its 8 neighbours holds a smaller nonzero label, so the
    smaller label keeps its pixels and the larger one gives up a 1-px rim. A label cut in two by
    its neighbours keeps only its largest piece (ties: the piece OpenCV numbers first), so the
    connected components of the result are exactly the labels that kept a pixel.
    """
    import cv2  # OpenCV's erosion and labelling define the generator's masks byte for byte

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"separate_touching needs a 2D label image, got shape {labels.shape}")
    big = np.float32(2 ** 24)  # above any label; float32 holds integers exactly up to here
    lab = np.where(labels > 0, labels.astype(np.float32), big)
    neighbour_min = cv2.erode(lab, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT,
                              borderValue=float(big))
    keep = ((labels > 0) & (neighbour_min >= lab)).astype(np.uint8)
    n_comp, comp = cv2.connectedComponents(keep, connectivity=8, ltype=cv2.CV_32S)
    if n_comp - 1 > len(np.unique(labels[keep > 0])):  # some label fell apart
        on = keep > 0
        pairs, counts = np.unique(labels[on].astype(np.int64) * n_comp + comp[on], return_counts=True)
        owner = pairs // n_comp
        order = np.lexsort((-counts, owner))  # per label, its biggest piece first
        first = np.ones(len(order), bool)
        first[1:] = owner[order][1:] != owner[order][:-1]
        good = np.zeros(n_comp, bool)
        good[(pairs % n_comp)[order][first]] = True
        keep = good[comp].astype(np.uint8)
    return keep


def object_scores(pred, gt, iou_threshold: float = 0.5, connectivity: int = 2) -> dict:
    """Object precision/recall/F1: components matched one-to-one when their IoU >= iou_threshold.

    pred and gt are binary masks or instance label images (see label_objects). Two touching
    objects that come out as one component match at most one of the two.
    """
    lp, n_p = label_objects(pred, connectivity)
    lg, n_g = label_objects(gt, connectivity)
    if lp.shape != lg.shape:
        raise ValueError(f"prediction shape {lp.shape} differs from ground truth shape {lg.shape}")
    tp, mean_iou = 0, float("nan")
    if n_p and n_g:
        both = (lp > 0) & (lg > 0)
        pair = lp[both].astype(np.int64) * (n_g + 1) + lg[both]
        keys, inter = np.unique(pair, return_counts=True)
        pi, gi = np.divmod(keys, n_g + 1)
        area_p = np.bincount(lp.ravel(), minlength=n_p + 1)
        area_g = np.bincount(lg.ravel(), minlength=n_g + 1)
        iou = inter / (area_p[pi] + area_g[gi] - inter)
        ok = iou >= iou_threshold
        pairs = assign_pairs(pi[ok], gi[ok], 1.0 - iou[ok])
        tp = len(pairs)
        if tp:
            lookup = dict(zip(zip(pi[ok].tolist(), gi[ok].tolist()), iou[ok].tolist()))
            mean_iou = float(np.mean([lookup[pg] for pg in pairs]))
    return {**_prf(tp, n_p - tp, n_g - tp), "n_pred": n_p, "n_gt": n_g, "matches": tp,
            "mean_matched_iou": mean_iou}


def component_centroids(mask, connectivity: int = 2) -> np.ndarray:
    """(n, ndim) centroids (pixel coordinates, unweighted) of the connected components of a mask."""
    m = np.asarray(mask) != 0
    labels, n = ndimage.label(m, structure=_structure(m.ndim, connectivity))
    if n == 0:
        return np.zeros((0, m.ndim))
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=n + 1)[1:]
    coords = np.indices(m.shape).reshape(m.ndim, -1)
    return np.stack([np.bincount(flat, weights=c, minlength=n + 1)[1:] / counts for c in coords], axis=1)


def spot_scores(pred, gt_points_yx, tol: float = 3.0) -> dict:
    """Score a binary spot mask against annotated spot centres (../shared/realdata/README.md).

    Label the mask's connected components (8-connectivity), take their centroids, match them
    one-to-one to the points with the Hungarian algorithm, a match only within `tol` px;
    precision = matches / components, recall = matches / points, F1 their harmonic mean.
    The one function for spot scoring: evaluate.py and the benchmarks both call it.
    """
    m = np.asarray(pred)
    if m.ndim != 2:
        raise ValueError(f"spot scoring needs a 2D mask, got shape {m.shape}")
    return point_scores(component_centroids(m, connectivity=2), gt_points_yx, tol)
