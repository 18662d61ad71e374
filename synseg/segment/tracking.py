"""Link per-frame vesicle detections of a time-lapse (TYX) into tracks, summarise and score the tracks.

    rows = link(detections, search_range_px=5.0, memory=1)   # each detection gets a track_id 1..n
    table = track_summary(rows, pixel_size_um=0.1, frame_interval_s=0.5)   # one row per track
    scores = link_scores(rows, true_rows, tol_px=3.0)          # link recall / precision against truth

A detection is a dict with `frame` (int), `y`, `x` (px; the centre of pixel (i, j) is the point (i, j))
and any other columns (area, intensity, ...), which pass through untouched; numbers may be strings, as
`tiffio.read_csv` gives them.

Linking uses laptrack (Fukai & Kawaguchi 2023), the Python form of the LAP tracker of Jaqaman et al.
2008 (Nat. Methods 5:695) that TrackMate also implements: frame t is joined to frame t+1 by one global
linear assignment that weighs every candidate link (squared displacement) against ending a track and
starting a new one, so vesicles may appear and vanish; a second assignment over the track segments closes
gaps of up to `memory` missing frames. It was chosen over trackpy, which also installs cleanly next to
torch 2.13 and numpy 2.x (both need pandas; trackpy adds PyYAML and looseversion, laptrack networkx,
pydantic, pooch, requests and click, all pure Python, a few MB), because
trackpy's Crocker-Grier linker resolves ambiguous subnetworks by exhaustive search, with a size cap that
raises in crowded fields, and handles gaps by "memory" inside the same step rather than as a separate
gap-closing assignment; laptrack's two explicit assignments are the standard formulation, have no such
cap and would also allow splitting and merging later (vesicle fission and fusion), which are left off here.
The two assignments are built here (lap_successors) with laptrack's cost matrices, entry for entry, and solved
by the same scipy routine, so the tracks are laptrack's (tests/test_tracking.py compares them) without its
import, which brought pandas, networkx, scikit-learn and scipy.stats into every --track run (1-2 s).

Costs are set here, not estimated from the data, so the result does not depend on what else is in the
video: a link costs its squared displacement and is allowed up to `search_range_px`; ending or starting a
track costs twice the largest allowed link, so any allowed link beats leaving both its ends open (also in
laptrack's float32 costs, where a tie at the edge would go either way) and the assignment trades links
against each other by total squared displacement. Across a gap of up to `memory` missing frames the
cost is the squared displacement per frame, (distance / frames apart)**2, under the same cutoff: a vesicle
may be out of sight for a frame and have moved up to two search ranges, as directed transport does.
"""
from __future__ import annotations

import math

import numpy as np

from synseg import metrics

DEFAULT_SEARCH_RANGE_PX = 5.0  # px per frame when pixel size or frame interval is unknown
MAX_SPEED_UM_S = 2.0  # fast end of motor-driven vesicle transport (kinesin and dynein carry cargo at ~0.5-2 um/s)
MIN_SEARCH_RANGE_PX = 2.0  # never below the jitter of a detected centre between frames
SUMMARY_COLUMNS = ("track_id", "first_frame", "last_frame", "duration_frames", "n_points", "mean_step_px",
                   "mean_speed_px_per_frame", "displacement_px", "duration_s", "mean_speed_um_s")


def default_search_range(pixel_size_um: float | None = None, frame_interval_s: float | None = None,
                         max_speed_um_s: float = MAX_SPEED_UM_S) -> float:
    """Largest per-frame displacement (px) to link across.

    With pixel size and frame interval known: the distance a vesicle moving at `max_speed_um_s` covers in
    one frame, in px, but at least MIN_SEARCH_RANGE_PX; otherwise DEFAULT_SEARCH_RANGE_PX (about 1 um/s at
    0.1 um/px and 0.5 s/frame). A range much larger than half the typical distance between vesicles makes
    links ambiguous: for crowded fields film faster rather than widen the range.
    """
    if pixel_size_um is None or frame_interval_s is None:
        return DEFAULT_SEARCH_RANGE_PX
    for name, value in (("pixel_size_um", pixel_size_um), ("frame_interval_s", frame_interval_s),
                        ("max_speed_um_s", max_speed_um_s)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    return max(MIN_SEARCH_RANGE_PX, max_speed_um_s * frame_interval_s / pixel_size_um)


def _points(rows: list[dict], what: str, need_track: bool = False):
    """Frames (int array), (N, 2) y, x array and, if asked, track ids of rows; clear errors for bad cells."""
    n = len(rows)
    frames = np.zeros(n, np.int64)
    yx = np.zeros((n, 2), np.float64)
    tracks = np.zeros(n, np.int64)
    need = ("frame", "y", "x", "track_id") if need_track else ("frame", "y", "x")
    for i, row in enumerate(rows):
        missing = [k for k in need if k not in row or row[k] in (None, "")]
        if missing:
            raise ValueError(f"{what} row {i} lacks {', '.join(missing)}; each needs {', '.join(need)}: {row}")
        try:
            f, y, x = float(row["frame"]), float(row["y"]), float(row["x"])
            t = float(row["track_id"]) if need_track else 0.0
        except (TypeError, ValueError) as err:
            raise ValueError(f"{what} row {i}: frame, y, x{', track_id' if need_track else ''} must be numbers "
                             f"({err}): {row}") from None
        if f != int(f) or (need_track and t != int(t)):
            raise ValueError(f"{what} row {i}: frame and track_id must be whole numbers: {row}")
        if not (math.isfinite(y) and math.isfinite(x)):
            raise ValueError(f"{what} row {i}: y and x must be finite: {row}")
        frames[i], yx[i], tracks[i] = int(f), (y, x), int(t)
    return frames, yx, tracks


def _gap_cost(end, start) -> float:
    """Squared displacement per frame between a segment's last point and a later one's first, (y, x, frame)."""
    return ((start[0] - end[0]) ** 2 + (start[1] - end[1]) ** 2) / (start[2] - end[2]) ** 2


EPSILON = 1e-6  # laptrack adds this to every cost of its matrices


def _assignment(data: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """The column assigned to each row of a square sparse cost matrix (laptrack's lap_optimization: scipy's
    min_weight_full_bipartite_matching on the entries in the order given, which decides between equal costs)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    matrix = coo_matrix(coo_matrix((data, (rows, cols)), shape=(size, size)))
    r, c = min_weight_full_bipartite_matching(matrix)
    return c[np.argsort(r)]


def _frame_links(c1: np.ndarray, c2: np.ndarray, cutoff: float, start_cost: float, end_cost: float) -> np.ndarray:
    """Index in c2 of the point each point of c1 is linked to (-1: its track ends): laptrack's frame-to-frame
    assignment (LapTrack._predict_links with build_frame_cost_matrix), entry for entry."""
    from scipy.spatial.distance import cdist

    m, n = len(c1), len(c2)
    dist = cdist(c1, c2, metric="sqeuclidean")
    r, c = np.where(dist < cutoff)
    data = np.concatenate([dist[r, c], np.ones(n) * end_cost, np.ones(m) * start_cost]).astype(np.float32)
    # the lower-right block: the transposed links at the matrix's least cost
    data = np.concatenate([data, np.full(len(r), data.min(), np.float32)]) + EPSILON
    rows = np.concatenate([r, np.arange(m, m + n), np.arange(m), c + m])
    cols = np.concatenate([c, np.arange(n), np.arange(n, n + m), r + n])
    to = _assignment(data, rows, cols, m + n)[:m]
    return np.where(to < n, to, -1)


def lap_successors(coords: list[np.ndarray], cost: float, reach: float, memory: int) -> dict:
    """{node: next node of its track} of the points coords[f][j] (nodes (f, j)); what link() asked of
    laptrack.LapTrack(metric="sqeuclidean", cutoff=cost, track_start_cost=track_end_cost=2 cost, gap_closing_metric=
    _gap_cost, gap_closing_cutoff=reach (none when memory is 0), gap_closing_max_frame_count=memory + 1,
    segment_start_cost=segment_end_cost=no_splitting_cost=no_merging_cost=2 reach, no splitting, no merging).predict,
    built here with the same cost matrices, entry for entry, and the same solver, so the tracks are the same; without
    laptrack's import (pandas, networkx, scikit-learn, scipy.stats: 1-2 s of every --track run) and its per-segment
    pandas rows.

    Frame links: one assignment per pair of consecutive frames. Gap closing: the segments (chains of frame links)
    in the order of their first node, each segment's end joined to the start of one beginning 2..memory + 1 frames
    later, by one assignment over all segments (build_segment_cost_matrix without splitting and merging columns).
    """
    successor = {}
    for f in range(len(coords) - 1):
        if len(coords[f]) and len(coords[f + 1]):
            to = _frame_links(coords[f], coords[f + 1], cost, 2 * cost, 2 * cost)
            successor.update({(f, j): (f + 1, int(k)) for j, k in enumerate(to) if k >= 0})
    if not memory:
        return successor
    linked = set(successor.values())
    firsts = [(f, j) for f, c in enumerate(coords) for j in range(len(c)) if (f, j) not in linked]
    lasts = []
    for node in firsts:
        while node in successor:
            node = successor[node]
        lasts.append(node)
    if not firsts:
        return successor
    first_frame = np.array([f for f, _ in firsts])
    last_frame = np.array([f for f, _ in lasts])
    first_xyz = np.array([coords[f][j] for f, j in firsts])
    last_xyz = np.array([coords[f][j] for f, j in lasts])
    from scipy.spatial.distance import cdist

    gap_rows, gap_cols, gap_data = [], [], []
    for i in range(len(firsts)):
        apart = first_frame - last_frame[i]
        candidates = np.flatnonzero((apart >= 1) & (apart <= memory + 1))
        if not len(candidates):
            continue
        # _gap_cost over all candidates at once, then exactly (laptrack's per-pair call, whose ** 2 is libm's pow,
        # not always x * x) for those within a hair of the cutoff: the figures laptrack's cdist gives them
        d = first_xyz[candidates] - last_xyz[i]
        rough = (d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) / (d[:, 2] * d[:, 2])
        close = candidates[rough < reach * (1 + 1e-9)]
        if not len(close):
            continue
        costs = cdist(last_xyz[i:i + 1], first_xyz[close], metric=_gap_cost)[0]
        near = np.flatnonzero(costs < reach)
        gap_rows.append(np.full(len(near), i))
        gap_cols.append(close[near])
        gap_data.append(costs[near])
    if not gap_rows or not sum(map(len, gap_rows)):
        return successor
    m = len(firsts)
    r, c = np.concatenate(gap_rows), np.concatenate(gap_cols)
    data = np.concatenate([np.concatenate(gap_data).astype(np.float32), np.ones(m) * (2 * reach),
                           np.ones(m) * (2 * reach), np.full(len(r), 2 * reach)]).astype(np.float32) + EPSILON
    rows = np.concatenate([r, np.arange(m, 2 * m), np.arange(m), c + m])
    cols = np.concatenate([c, np.arange(m), np.arange(m, 2 * m), r + m])
    to = _assignment(data, rows, cols, 2 * m)[:m]
    successor.update({lasts[i]: firsts[k] for i, k in enumerate(to) if k < m})
    return successor


def link(detections, search_range_px: float, memory: int = 0) -> list[dict]:
    """Rows of `detections` with a `track_id` (1..n) added, sorted by track_id then frame.

    detections: iterable of dicts with frame, y, x (px) and any other columns, which pass through (an
    existing track_id is replaced; frame becomes int, y and x float). search_range_px: the largest
    displacement between consecutive frames that may be linked (inclusive); memory: how many frames in a
    row a vesicle may go undetected and keep its id. Tracks are numbered in the order of their first point
    by (frame, y, x), so the result does not depend on the order of the input rows (exact duplicates aside).
    """
    if not search_range_px > 0:
        raise ValueError(f"search_range_px must be > 0, got {search_range_px}")
    if int(memory) != memory or memory < 0:
        raise ValueError(f"memory must be a whole number >= 0, got {memory}")
    memory = int(memory)
    rows = [dict(r) for r in detections]
    if not rows:
        return []
    frames, yx, _ = _points(rows, "detection")
    order = np.lexsort((yx[:, 1], yx[:, 0], frames))  # by frame, then y, then x
    first = int(frames.min())
    # Coordinates (y, x, frame): the frame axis adds exactly 1 to every frame-to-frame squared distance and
    # tells the gap cost how many frames apart two segment ends are.
    coords = [np.zeros((0, 3))] * (int(frames.max()) - first + 1)
    node_row = {}  # laptrack node (frame - first, index within that frame) -> row index
    for f in np.unique(frames):
        idx = order[frames[order] == f]
        coords[f - first] = np.column_stack([yx[idx], frames[idx].astype(np.float64)])
        node_row.update({(int(f) - first, j): int(i) for j, i in enumerate(idx)})

    reach = search_range_px ** 2 * (1 + 1e-9)  # laptrack keeps links strictly below the cutoff; this makes it <=
    cost = reach + 1.0  # the frame axis's share
    successor = lap_successors(coords, cost, reach, memory)

    rank = np.empty(len(rows), np.int64)
    rank[order] = np.arange(len(rows))
    linked = set(successor.values())
    starts = sorted((node for node in node_row if node not in linked), key=lambda n: rank[node_row[n]])
    out = []
    for track_id, node in enumerate(starts, start=1):
        while node is not None:
            i = node_row[node]
            row = {k: v for k, v in rows[i].items() if k != "track_id"}
            row.update(frame=int(frames[i]), y=float(yx[i, 0]), x=float(yx[i, 1]))
            out.append({"track_id": track_id, **row})
            node = successor.get(node)
    if len(out) != len(rows):
        raise RuntimeError(f"linking placed {len(out)} of {len(rows)} detections in tracks")
    return out


def _tracks(rows: list[dict], what: str) -> tuple[dict, np.ndarray, np.ndarray]:
    """{track_id: row indices in frame order}, frames and yx of rows; a track may hold one point per frame."""
    frames, yx, ids = _points(rows, what, need_track=True)
    tracks: dict[int, list[int]] = {}
    for i in np.lexsort((frames, ids)):
        tracks.setdefault(int(ids[i]), []).append(int(i))
    for tid, idx in tracks.items():
        f = frames[idx]
        if np.any(f[1:] == f[:-1]):
            raise ValueError(f"{what}: track {tid} has two points in frame {int(f[1:][f[1:] == f[:-1]][0])}")
    return tracks, frames, yx


def track_summary(rows, pixel_size_um: float | None = None, frame_interval_s: float | None = None) -> list[dict]:
    """One row per track (SUMMARY_COLUMNS), in track_id order.

    duration_frames = last_frame - first_frame (elapsed, so a one-point track lasts 0); mean_step_px: mean
    distance between consecutive points; mean_speed_px_per_frame: path length / duration_frames (a step
    across a gap counts once, over its frames); displacement_px: first to last point. duration_s and
    mean_speed_um_s need both pixel_size_um and frame_interval_s, and are None (an empty CSV cell) without
    them; so is any value of a one-point track that needs a step.
    """
    rows = list(rows)
    for name, value in (("pixel_size_um", pixel_size_um), ("frame_interval_s", frame_interval_s)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0 or None, got {value}")
    physical = pixel_size_um is not None and frame_interval_s is not None
    tracks, frames, yx = _tracks(rows, "track_summary")
    out = []
    for tid in sorted(tracks):
        idx = tracks[tid]
        steps = np.hypot(*np.diff(yx[idx], axis=0).T) if len(idx) > 1 else np.zeros(0)
        duration = int(frames[idx[-1]] - frames[idx[0]])
        speed = float(steps.sum() / duration) if duration else None
        out.append({
            "track_id": tid, "first_frame": int(frames[idx[0]]), "last_frame": int(frames[idx[-1]]),
            "duration_frames": duration, "n_points": len(idx),
            "mean_step_px": float(steps.mean()) if steps.size else None,
            "mean_speed_px_per_frame": speed,
            "displacement_px": float(np.hypot(*(yx[idx[-1]] - yx[idx[0]]))),
            "duration_s": duration * frame_interval_s if physical else None,
            "mean_speed_um_s": speed * pixel_size_um / frame_interval_s if physical and speed is not None else None,
        })
    return out


def _share(part: int, total: int, other_total: int) -> float:
    """part / total, or metrics.py's empty convention: 1 when the other side is empty too, else 0."""
    if total:
        return part / total
    return 1.0 if other_total == 0 else 0.0


def link_scores(pred_rows, true_rows, tol_px: float = 3.0) -> dict:
    """Link recall and precision of predicted tracks against true tracks (both rows with frame, track_id, y, x).

    Per frame, predicted and true detections are matched one-to-one within tol_px (metrics.match_points).
    A link is a pair of consecutive points of one track (frame t -> t+1, or across a gap). A true link is
    recovered when both its points are matched and their matches carry the same predicted track_id; a
    predicted link is correct when both its points are matched to points of the same true track. An
    identity swap thus costs the links on either side of it. These two score detection and linking
    together: a missed vesicle costs the true links on both sides of it, a false detection the predicted
    links on both sides of it, so link recall stays near or below detection recall and link precision near
    or below detection precision however well the linker does. link_recall_detected and
    link_precision_detected score the linker alone: the same over each track's matched points only (a true
    track's points that were detected, a predicted track's points that are real), so a missed or false
    detection costs no link, and a track bridged across a missed frame (memory) earns its link. Several
    vesicles merged into one detection leave all but one unmatched in that frame. Empty sides follow
    metrics.py's convention.
    """
    pred_rows, true_rows = list(pred_rows), list(true_rows)
    p_tracks, p_frames, p_yx = _tracks(pred_rows, "predicted")
    t_tracks, t_frames, t_yx = _tracks(true_rows, "true")
    p_id = np.zeros(len(pred_rows), np.int64)
    for tid, idx in p_tracks.items():
        p_id[idx] = tid
    t_id = np.zeros(len(true_rows), np.int64)
    for tid, idx in t_tracks.items():
        t_id[idx] = tid

    pred_of_true = np.full(len(true_rows), -1)  # row index of the matched prediction, -1 if none
    true_of_pred = np.full(len(pred_rows), -1)
    for f in np.union1d(p_frames, t_frames):
        pi, ti = np.flatnonzero(p_frames == f), np.flatnonzero(t_frames == f)
        for a, b in metrics.match_points(p_yx[pi], t_yx[ti], tol_px):
            true_of_pred[pi[a]], pred_of_true[ti[b]] = ti[b], pi[a]

    def kept(tracks, match, other_id):
        """Links of `tracks` whose two points are matched to points sharing one track on the other side."""
        n = good = 0
        for idx in tracks.values():
            for a, b in zip(idx[:-1], idx[1:]):
                n += 1
                good += bool(match[a] >= 0 and match[b] >= 0 and other_id[match[a]] == other_id[match[b]])
        return n, good

    n_true_links, recovered = kept(t_tracks, pred_of_true, p_id)
    n_pred_links, correct = kept(p_tracks, true_of_pred, t_id)
    # The same over matched points alone: a missed or false detection then costs no link, so these
    # isolate the linker (does it keep identities, across gaps too) from the detector.
    seen = {tid: [i for i in idx if pred_of_true[i] >= 0] for tid, idx in t_tracks.items()}
    n_seen_links, recovered_seen = kept(seen, pred_of_true, p_id)
    real = {tid: [i for i in idx if true_of_pred[i] >= 0] for tid, idx in p_tracks.items()}
    n_real_links, correct_real = kept(real, true_of_pred, t_id)
    recall = _share(recovered, n_true_links, n_pred_links)
    precision = _share(correct, n_pred_links, n_true_links)
    matched = int((true_of_pred >= 0).sum())
    return {
        "link_recall": recall, "link_precision": precision,
        "link_f1": 2 * recall * precision / (recall + precision) if recall + precision else 0.0,
        "link_recall_detected": _share(recovered_seen, n_seen_links, n_real_links),
        "link_precision_detected": _share(correct_real, n_real_links, n_seen_links),
        "n_true_links": n_true_links, "n_pred_links": n_pred_links,
        "n_true_links_recovered": recovered, "n_pred_links_correct": correct,
        "n_true_tracks": len(t_tracks), "n_pred_tracks": len(p_tracks),
        "n_true_detections": len(true_rows), "n_pred_detections": len(pred_rows), "n_matched_detections": matched,
        "detection_recall": _share(matched, len(true_rows), len(pred_rows)),
        "detection_precision": _share(matched, len(pred_rows), len(true_rows)),
    }
