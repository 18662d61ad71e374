"""ISBI 2012 Particle Tracking Challenge-style vesicle movies: SynSeg_Vesicle.py --track beside a LoG peer.

Example:
    .venv/bin/python bench/isbi_tracking.py --output-dir /tmp/synseg_isbi            # 12 movies of 60 frames
    .venv/bin/python bench/isbi_tracking.py --output-dir /tmp/synseg_isbi --quick    # 4 movies of 20 frames
Measured 2026-12-07 on the 2-core build machine while two training jobs shared it: full 25 min (SynSeg
47 MP at 0.032 MP/s; the LoG peers, run meanwhile, ~0.7 s per frame for both thresholds), --quick 2 min.
On idle cores SynSeg's ~0.1 MP/s makes the full run ~10 min; --frames, --snrs and --densities shrink it.

What is built (seeded; the same trajectories at every SNR of one density, so SNRs are paired):
  movies     --size x --size px (256), --frames frames (60), pixel size 0.1 um in the ImageJ tags, TYX uint16
             (camera offset 100 ADU, 1 ADU per photon); no frame interval is written, so SynSeg links with
             its unknown-interval search range (5 px) unless --search-range is given
  particles  Gaussian spots of sigma 1.0-1.5 px, peak amplitude a photons over a flat background of b = 10
             photons per pixel, Poisson noise; SNR = a / sqrt(a + b) as in ISBI 2012, at SNR 1, 2, 4, 7
  density    low / mid / high: about 30 / 120 / 250 particles per frame (a steady state of births and deaths)
  motion     60% Brownian (step s.d. 0.5-1.2 px per axis per frame), 40% directed (1-3 px per frame, heading
             wandering by 0.15 rad per frame, 0.3 px jitter); each particle dies with probability
             1 / --mean-life per frame and as many are born (Poisson) at random places; a particle that
             leaves the field ends its track and is replaced by a new one
Methods:
  SynSeg     `SynSeg_Vesicle.py -i MOVIES -o OUT --track -m MODEL` (one run over all movies); detections and
             tracks from OUT/tracks.csv
  LoG        skimage blob_log (sigma 1-4 px, 7 scales) on each frame's 1st-99.9th percentile stretch at
             thresholds 0.2 and 0.1, linked frame to frame by a one-to-one nearest-neighbour (Hungarian) linker
             within the same 5 px, no gap closing
Scores (per movie, counts pooled where a table pools):
  detection  recall / precision / F1 of one-to-one matching per frame within 3 px (Hungarian)
  links      link recall: true links (one particle in frames t and t+1) whose both ends are matched to
             detections of one estimated track; link precision: estimated links between consecutive frames
             whose both ends are matched to points of one true track (links across a closed gap are left out)
  Chenouard  et al. 2014 (IEEE TMI 33:281, the ISBI 2012 challenge paper): alpha, beta, JSC, JSC_theta with a
             gate of eps = 5 px (see chenouard_scores)
Prints markdown tables and writes isbi_tracking.md and isbi_tracking.json to --output-dir. Not part of `make test`.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the synseg package of this checkout

from synseg import cli  # noqa: E402

SNRS = (1.0, 2.0, 4.0, 7.0)
DENSITIES = {"low": 30, "mid": 120, "high": 250}
BACKGROUND = 10.0  # photons per pixel
OFFSET = 100  # ADU
PIXEL_UM = 0.1
SIGMA_PX = (1.0, 1.5)
BROWNIAN_SHARE = 0.6
BROWNIAN_SD = (0.5, 1.2)  # px per axis per frame
DIRECTED_SPEED = (1.0, 3.0)  # px per frame
TURN_SD, JITTER_SD = 0.15, 0.3
MATCH_PX = 3.0
EPS_PX = 5.0
LINK_PX = 5.0
LOG_THRESHOLDS = (0.2, 0.1)
LOG_SPOTS = dict(min_sigma=1.0, max_sigma=4.0, num_sigma=7)


# ---------------------------------------------------------------- movies

def amplitude_for_snr(snr: float, background: float = BACKGROUND) -> float:
    """Peak amplitude a (photons) with a / sqrt(a + b) = snr: the positive root of a^2 - snr^2 a - snr^2 b = 0."""
    s2 = snr * snr
    return 0.5 * (s2 + np.sqrt(s2 * s2 + 4.0 * s2 * background))


def simulate_tracks(rng: np.random.Generator, n: int, frames: int, size: int, mean_life: float) -> np.ndarray:
    """True trajectories as rows (track_id, frame, y, x, sigma), only positions inside the field.

    n particles at the start and, per frame, Poisson(n / mean_life) births plus one birth per particle that
    left the field, so the count stays near n; each particle dies with probability 1 / mean_life per frame.
    """
    hi = size - 0.5
    rows = []
    alive: list[dict] = []
    next_id = 1

    def born() -> dict:
        nonlocal next_id
        directed = rng.random() >= BROWNIAN_SHARE
        p = {"id": next_id, "y": rng.uniform(0, size - 1), "x": rng.uniform(0, size - 1),
             "sigma": rng.uniform(*SIGMA_PX), "directed": directed,
             "sd": rng.uniform(*BROWNIAN_SD), "speed": rng.uniform(*DIRECTED_SPEED),
             "heading": rng.uniform(0, 2 * np.pi)}
        next_id += 1
        return p

    alive = [born() for _ in range(n)]
    for t in range(frames):
        for p in alive:
            rows.append((p["id"], t, p["y"], p["x"], p["sigma"]))
        survivors, left = [], 0
        for p in alive:
            if rng.random() < 1.0 / mean_life:
                continue
            if p["directed"]:
                p["heading"] += rng.normal(0, TURN_SD)
                p["y"] += p["speed"] * np.sin(p["heading"]) + rng.normal(0, JITTER_SD)
                p["x"] += p["speed"] * np.cos(p["heading"]) + rng.normal(0, JITTER_SD)
            else:
                p["y"] += rng.normal(0, p["sd"])
                p["x"] += rng.normal(0, p["sd"])
            if -0.5 <= p["y"] < hi and -0.5 <= p["x"] < hi:
                survivors.append(p)
            else:
                left += 1
        alive = survivors + [born() for _ in range(int(rng.poisson(n / mean_life)) + left)]
    return np.array(rows, np.float64).reshape(-1, 5)


def render_movie(rng: np.random.Generator, truth: np.ndarray, frames: int, size: int, amplitude: float) -> np.ndarray:
    """(frames, size, size) uint16: Poisson(b + sum of Gaussians of peak `amplitude`) + OFFSET."""
    expected = np.full((frames, size, size), BACKGROUND, np.float64)
    for _, t, y, x, s in truth:
        r = int(np.ceil(4 * s))
        y0, y1 = max(0, int(y) - r), min(size, int(y) + r + 2)
        x0, x1 = max(0, int(x) - r), min(size, int(x) + r + 2)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        expected[int(t), y0:y1, x0:x1] += amplitude * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s))
    return np.minimum(rng.poisson(expected) + OFFSET, 65535).astype(np.uint16)


def write_movie(path: Path, movie: np.ndarray) -> None:
    """A TYX ImageJ TIFF with pixel size PIXEL_UM (no frame interval)."""
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, movie, imagej=True, resolution=(1 / PIXEL_UM, 1 / PIXEL_UM),
                     metadata={"axes": "TYX", "unit": "um"})


# ---------------------------------------------------------------- scoring (pure)

def match_frames(truth: np.ndarray, est: np.ndarray, tol: float = MATCH_PX) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching within `tol` px in every frame (Hungarian, most matches, then least distance).

    truth, est: rows (track_id, frame, y, x, ...). Returns (truth_to_est, est_to_truth): for each row the
    index of its matched row in the other table, or -1.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    t2e = np.full(len(truth), -1, np.int64)
    e2t = np.full(len(est), -1, np.int64)
    if len(truth) == 0 or len(est) == 0:
        return t2e, e2t
    for f in np.intersect1d(truth[:, 1], est[:, 1]):
        ti, ei = np.flatnonzero(truth[:, 1] == f), np.flatnonzero(est[:, 1] == f)
        d = cdist(truth[ti, 2:4], est[ei, 2:4])
        ok = d <= tol
        if not ok.any():
            continue
        # a match first (cost 0..tol), then distance: every allowed pair beats every forbidden one
        big = tol * (min(len(ti), len(ei)) + 1) + 1.0
        r, c = linear_sum_assignment(np.where(ok, d, big))
        keep = ok[r, c]
        t2e[ti[r[keep]]] = ei[c[keep]]
        e2t[ei[c[keep]]] = ti[r[keep]]
    return t2e, e2t


def prf(tp: int, fp: int, fn: int) -> dict:
    """Recall, precision and F1 of counts (1.0 where nothing was there to find or to call)."""
    r = tp / (tp + fn) if tp + fn else 1.0
    p = tp / (tp + fp) if tp + fp else 1.0
    return {"recall": r, "precision": p, "f1": 2 * p * r / (p + r) if p + r else 0.0, "tp": tp, "fp": fp, "fn": fn}


def _links(rows: np.ndarray) -> np.ndarray:
    """(k, 2) row index pairs of consecutive-frame points of one track (frame t and t + 1)."""
    if len(rows) == 0:
        return np.zeros((0, 2), np.int64)
    order = np.lexsort((rows[:, 1], rows[:, 0]))
    a, b = order[:-1], order[1:]
    keep = (rows[a, 0] == rows[b, 0]) & (rows[b, 1] - rows[a, 1] == 1)
    return np.column_stack([a[keep], b[keep]])


def link_scores(truth: np.ndarray, est: np.ndarray, t2e: np.ndarray, e2t: np.ndarray) -> dict:
    """Link recall and precision end to end (a missed or false detection costs its links too).

    A true link is recovered when both its ends are matched to detections carrying one estimated track id;
    an estimated link (consecutive frames of one track) is right when both ends are matched to points of one
    true track.
    """
    tl, el = _links(truth), _links(est)
    rec = 0
    if len(tl):
        a, b = t2e[tl[:, 0]], t2e[tl[:, 1]]
        ok = (a >= 0) & (b >= 0)
        rec = int(np.count_nonzero(est[a[ok], 0] == est[b[ok], 0]))
    cor = 0
    if len(el):
        a, b = e2t[el[:, 0]], e2t[el[:, 1]]
        ok = (a >= 0) & (b >= 0)
        cor = int(np.count_nonzero(truth[a[ok], 0] == truth[b[ok], 0]))
    return {"link_recall": rec / len(tl) if len(tl) else 1.0, "link_precision": cor / len(el) if len(el) else 1.0,
            "n_true_links": len(tl), "n_est_links": len(el), "true_links_recovered": rec, "est_links_correct": cor}


def chenouard_scores(truth: np.ndarray, est: np.ndarray, eps: float = EPS_PX) -> dict:
    """Track-pairing measures of Chenouard et al. 2014 with a gate of `eps` px.

    truth, est: rows (track_id, frame, y, x, ...), at most one point per track and frame. The distance
    between a true track and an estimated one sums, over every frame where either has a point,
    min(|p - q|, eps), a point with no partner costing eps; a true track paired with nothing (a dummy)
    costs eps per point. Every true track is paired with at most one estimated track, or a dummy, so that the
    total distance d(X, Y*) is least (Hungarian). With d(X, 0) = eps x (true points) and d(Ybar, 0) =
    eps x (points of the estimated tracks left unpaired):
      alpha = 1 - d(X, Y*) / d(X, 0)                       (0: nothing found, 1: perfect)
      beta  = (d(X, 0) - d(X, Y*)) / (d(X, 0) + d(Ybar, 0))  (alpha, also penalised for spurious tracks)
      JSC   = TP / (TP + FN + FP) over points: TP = points of paired tracks in one frame within eps
      JSC_theta = paired / (paired + unpaired true + unpaired estimated) over tracks
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial import cKDTree

    n_tp, n_ep = len(truth), len(est)
    tid, t_inv = np.unique(truth[:, 0], return_inverse=True) if n_tp else (np.zeros(0), np.zeros(0, np.int64))
    eid, e_inv = np.unique(est[:, 0], return_inverse=True) if n_ep else (np.zeros(0), np.zeros(0, np.int64))
    t_len = np.bincount(t_inv, minlength=len(tid)).astype(np.float64)
    e_len = np.bincount(e_inv, minlength=len(eid)).astype(np.float64)
    d_x0 = eps * n_tp
    out = {"n_true_tracks": len(tid), "n_est_tracks": len(eid), "n_true_points": n_tp, "n_est_points": n_ep}
    if len(tid) == 0:
        return {**out, "alpha": 1.0, "beta": 1.0 if len(eid) == 0 else 0.0, "jsc": 1.0 if n_ep == 0 else 0.0,
                "jsc_theta": 1.0 if len(eid) == 0 else 0.0, "paired": 0}
    # every (true track, estimated track, frame) within eps: the only pairs that can beat a dummy
    ti_all, ei_all, dist_all = [], [], []
    for f in np.intersect1d(truth[:, 1], est[:, 1]) if n_ep else []:
        ti, ei = np.flatnonzero(truth[:, 1] == f), np.flatnonzero(est[:, 1] == f)
        near = cKDTree(truth[ti, 2:4]).sparse_distance_matrix(cKDTree(est[ei, 2:4]), eps, output_type="ndarray")
        near = near[near["v"] < eps]
        ti_all.append(t_inv[ti[near["i"]]])
        ei_all.append(e_inv[ei[near["j"]]])
        dist_all.append(near["v"])
    if ti_all:
        ti_all, ei_all, dist_all = np.concatenate(ti_all), np.concatenate(ei_all), np.concatenate(dist_all)
    else:
        ti_all = ei_all = np.zeros(0, np.int64)
        dist_all = np.zeros(0)
    pairs, pinv = np.unique(np.column_stack([ti_all, ei_all]).reshape(-1, 2), axis=0, return_inverse=True)
    pinv = pinv.reshape(-1)
    saving = np.bincount(pinv, weights=eps - dist_all, minlength=len(pairs))
    n_close = np.bincount(pinv, minlength=len(pairs))
    # frames where both tracks have a point (close or not), for the candidate pairs only
    t_frames = [set() for _ in tid]
    for i, f in zip(t_inv, truth[:, 1]):
        t_frames[i].add(f)
    e_frames = [set() for _ in eid]
    for i, f in zip(e_inv, est[:, 1]):
        e_frames[i].add(f)
    common = np.array([len(t_frames[a] & e_frames[b]) for a, b in pairs], np.float64)
    # d(theta, omega) = eps x (frames where either has a point) - sum over close frames of (eps - distance)
    cost = eps * (t_len[pairs[:, 0]] + e_len[pairs[:, 1]] - common) - saving if len(pairs) else np.zeros(0)
    cand, cand_col = np.unique(pairs[:, 1], return_inverse=True) if len(pairs) else (np.zeros(0, np.int64), [])
    nt, nc = len(tid), len(cand)
    big = eps * (n_tp + n_ep) + 1.0
    matrix = np.full((nt, nc + nt), big)
    if len(pairs):
        matrix[pairs[:, 0], np.asarray(cand_col).reshape(-1)] = cost
    matrix[np.arange(nt), nc + np.arange(nt)] = eps * t_len
    r, c = linear_sum_assignment(matrix)
    d_xy = float(matrix[r, c].sum())
    real = c < nc
    paired_est = cand[c[real]]
    lookup = {(int(a), int(b)): k for k, (a, b) in enumerate(pairs)}
    tp = int(sum(n_close[lookup[(int(a), int(b))]] for a, b in zip(r[real], paired_est)))
    unpaired = np.ones(len(eid), bool)
    unpaired[paired_est] = False
    d_ybar = eps * float(e_len[unpaired].sum())
    n_pair = int(real.sum())
    return {**out, "alpha": 1.0 - d_xy / d_x0, "beta": (d_x0 - d_xy) / (d_x0 + d_ybar),
            "jsc": tp / (n_tp + n_ep - tp) if n_tp + n_ep - tp else 1.0,
            "jsc_theta": n_pair / (len(tid) + len(eid) - n_pair), "paired": n_pair, "tp_points": tp}


def nn_link(points: np.ndarray, max_step: float = LINK_PX) -> np.ndarray:
    """Rows (track_id, frame, y, x) from detections (frame, y, x): consecutive frames joined one-to-one
    (Hungarian on distance) within `max_step` px; an unjoined detection starts a new track. No gap closing."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    points = np.asarray(points, np.float64).reshape(-1, 3)
    ids = np.zeros(len(points), np.int64)
    next_id = 1
    prev = np.zeros(0, np.int64)
    for f in np.unique(points[:, 0]):
        cur = np.flatnonzero(points[:, 0] == f)
        joined = np.zeros(len(cur), bool)
        if len(prev) and points[prev[0], 0] == f - 1:
            d = cdist(points[prev, 1:], points[cur, 1:])
            ok = d <= max_step
            if ok.any():
                r, c = linear_sum_assignment(np.where(ok, d, max_step * (len(cur) + 1) + 1.0))
                keep = ok[r, c]
                ids[cur[c[keep]]] = ids[prev[r[keep]]]
                joined[c[keep]] = True
        n_new = int((~joined).sum())
        ids[cur[~joined]] = np.arange(next_id, next_id + n_new)
        next_id += n_new
        prev = cur
    return np.column_stack([ids.astype(np.float64), points])


def score_movie(truth: np.ndarray, est: np.ndarray) -> dict:
    """Detection, link and Chenouard scores of one movie (rows track_id, frame, y, x)."""
    truth, est = (np.asarray(a, np.float64) for a in (truth, est))
    truth, est = (a.reshape(-1, a.shape[-1] if a.size else 4)[:, :4] for a in (truth, est))
    t2e, e2t = match_frames(truth, est)
    tp = int(np.count_nonzero(t2e >= 0))
    det = prf(tp, len(est) - tp, len(truth) - tp)
    return {**{f"det_{k}": v for k, v in det.items()}, **link_scores(truth, est, t2e, e2t),
            **chenouard_scores(truth, est)}


# ---------------------------------------------------------------- methods

def log_tracks(movie: np.ndarray, threshold: float) -> np.ndarray:
    """LoG blobs per frame (1st-99.9th percentile stretch), linked with nn_link: rows (track_id, frame, y, x)."""
    from skimage.feature import blob_log

    found = []
    for t, frame in enumerate(movie):
        lo, hi = np.percentile(frame, [1.0, 99.9])
        a = np.clip((frame.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)
        b = blob_log(a, threshold=threshold, **LOG_SPOTS)
        found.append(np.column_stack([np.full(len(b), t, np.float64), b[:, :2]]))
    return nn_link(np.concatenate(found) if found else np.zeros((0, 3)))


def start_synseg(movies: Path, out: Path, args) -> tuple[subprocess.Popen, list, float]:
    """Start SynSeg_Vesicle.py --track over the movie folder in the background (the LoG peers run meanwhile)."""
    cmd = [sys.executable, str(args.repo / "SynSeg_Vesicle.py"), "-i", str(movies), "-o", str(out), "--track",
           "--overwrite", "-m", str(args.model), "--device", args.device]
    if args.search_range:
        cmd += ["--search-range", str(args.search_range)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    print("$ " + " ".join(cmd), flush=True)
    log = open(out.parent / "synseg.log", "w")
    proc = subprocess.Popen(cmd, cwd=args.repo, stdout=log, stderr=subprocess.STDOUT, text=True)
    return proc, cmd, time.perf_counter()


def finish_synseg(proc: subprocess.Popen, out: Path, t0: float) -> tuple[dict, float]:
    """Wait for SynSeg; ({movie stem: rows (track_id, frame, y, x)} from OUT/tracks.csv, its wall seconds)."""
    rc = proc.wait()
    seconds = time.perf_counter() - t0
    log = out.parent / "synseg.log"
    if rc:
        last = (log.read_text().strip().splitlines() or ["no message"])[-1]
        raise SystemExit(f"SynSeg_Vesicle.py failed (exit {rc}): {last}  (log: {log})")
    tracks: dict[str, list] = {}
    with open(out / "tracks.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            tracks.setdefault(Path(row["file"]).stem, []).append(
                (float(row["track_id"]), float(row["frame"]), float(row["y"]), float(row["x"])))
    return {k: np.array(v, np.float64) for k, v in tracks.items()}, seconds


# ---------------------------------------------------------------- tables

def table(results: dict, snrs, densities) -> str:
    """The markdown tables of one run."""
    lines = []
    have = any("SynSeg" in r for r in results.values())
    if have:
        lines += ["## SynSeg_Vesicle.py --track (det: one-to-one within 3 px per frame; Chenouard measures at "
                  "eps 5 px)", "", "| SNR | density | particles/frame | det R | det P | det F1 | link R | link P "
                  "| alpha | beta | JSC | JSC_theta | LoG 0.2 det F1 | LoG 0.2 link R | LoG 0.1 det F1 "
                  "| LoG 0.1 link R |",
                  "|---|---|---|" + "---|" * 13]
    for snr in snrs if have else ():
        for dens in densities:
            r = results.get(f"snr{snr:g}_{dens}")
            if r is None:
                continue
            s = r["SynSeg"]
            cells = [f"{s[k]:.3f}" for k in ("det_recall", "det_precision", "det_f1", "link_recall",
                                             "link_precision", "alpha", "beta", "jsc", "jsc_theta")]
            for t in LOG_THRESHOLDS:
                g = r[f"LoG {t:g}"]
                cells += [f"{g['det_f1']:.3f}", f"{g['link_recall']:.3f}"]
            lines.append(f"| {snr:g} | {dens} | {r['particles_per_frame']:.0f} | " + " | ".join(cells) + " |")
    lines += ([""] if lines else []) + [
              "## Peers in full (LoG + nearest-neighbour linker)", "",
              "| SNR | density | method | det R | det P | det F1 | link R | link P | alpha | beta | JSC | JSC_theta |",
              "|---|---|---|" + "---|" * 9]
    for snr in snrs:
        for dens in densities:
            r = results.get(f"snr{snr:g}_{dens}")
            if r is None:
                continue
            for t in LOG_THRESHOLDS:
                g = r[f"LoG {t:g}"]
                lines.append(f"| {snr:g} | {dens} | LoG {t:g} | " + " | ".join(
                    f"{g[k]:.3f}" for k in ("det_recall", "det_precision", "det_f1", "link_recall", "link_precision",
                                            "alpha", "beta", "jsc", "jsc_theta")) + " |")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    p.add_argument("--output-dir", type=Path, default=Path("/tmp/synseg_isbi"), help="movies, SynSeg output, tables")
    p.add_argument("-m", "--model", type=Path, default=None,
                   help="vesicle checkpoint (default: REPO/models/vesicle.pth)")
    p.add_argument("--repo", type=Path, default=ROOT, help="checkout whose SynSeg_Vesicle.py runs")
    p.add_argument("--frames", type=int, default=60, help="frames per movie")
    p.add_argument("--size", type=int, default=256, help="frame height and width in px")
    p.add_argument("--snrs", type=float, nargs="+", default=list(SNRS), help="SNR levels, a / sqrt(a + b)")
    p.add_argument("--densities", nargs="+", default=list(DENSITIES), choices=list(DENSITIES),
                   help="particle densities (about 30 / 120 / 250 per frame at 256 px; scaled by area)")
    p.add_argument("--mean-life", type=float, default=25.0, help="mean particle lifetime in frames")
    p.add_argument("--quick", action="store_true", help="a small run: 20 frames, SNR 2 and 7, densities low and high")
    p.add_argument("--seed", type=int, default=2012, help="trajectories and noise")
    p.add_argument("--device", default="auto", help="SynSeg device: auto, cpu, cuda")
    p.add_argument("--threads", type=int, default=0, help="SynSeg CPU threads (0: its default)")
    p.add_argument("--search-range", type=float, default=None,
                   help="SynSeg linking range in px (default: the script's own, 5 px without a frame interval)")
    p.add_argument("--no-synseg", action="store_true", help="peers only")
    return p


def main(args: argparse.Namespace) -> int:
    """Make the movies, run SynSeg and the LoG peers, score, print and write the tables."""
    args.model = args.model or args.repo / "models" / "vesicle.pth"
    if args.quick:
        args.frames, args.snrs, args.densities = 20, [2.0, 7.0], ["low", "high"]
    if args.frames < 2 or args.size < 32 or args.mean_life <= 1:
        print("isbi_tracking.py: need --frames >= 2, --size >= 32, --mean-life > 1", file=sys.stderr)
        return 2
    if not args.no_synseg and not args.model.is_file():
        print(f"isbi_tracking.py: {args.model}: no such model (see -m)", file=sys.stderr)
        return 1
    out = args.output_dir
    movies = out / "movies"
    movies.mkdir(parents=True, exist_ok=True)
    for old in movies.glob("*.tif"):  # our own folder: a smaller re-run must not score stale movies
        old.unlink()
    t0 = time.perf_counter()
    truths, counts = {}, {}
    for d_i, dens in enumerate(args.densities):
        n = max(1, round(DENSITIES[dens] * (args.size / 256) ** 2))
        truth = simulate_tracks(np.random.default_rng([args.seed, d_i]), n, args.frames, args.size, args.mean_life)
        for s_i, snr in enumerate(args.snrs):
            name = f"snr{snr:g}_{dens}"
            movie = render_movie(np.random.default_rng([args.seed, d_i, s_i, 1]), truth, args.frames, args.size,
                                 amplitude_for_snr(snr))
            write_movie(movies / f"{name}.tif", movie)
            truths[name] = truth[:, :4]
            counts[name] = len(truth) / args.frames
    print(f"{len(truths)} movies of {args.frames} x {args.size}^2 px in {movies} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    if not args.no_synseg:
        (out / "synseg").mkdir(exist_ok=True)
        proc, _, t_syn = start_synseg(movies, out / "synseg", args)
    import tifffile

    results = {}
    t_log = time.perf_counter()
    for name, truth in truths.items():  # while SynSeg runs
        movie = tifffile.imread(movies / f"{name}.tif")
        r = {"particles_per_frame": counts[name], "n_true_tracks": int(len(np.unique(truth[:, 0])))}
        for t in LOG_THRESHOLDS:
            r[f"LoG {t:g}"] = score_movie(truth, log_tracks(movie, t))
        results[name] = r
    print(f"  LoG + scoring: {time.perf_counter() - t_log:.0f} s", flush=True)
    seconds = 0.0
    if not args.no_synseg:
        synseg, seconds = finish_synseg(proc, out / "synseg", t_syn)
        mp = len(truths) * args.frames * args.size ** 2 / 1e6
        print(f"  SynSeg: {seconds:.0f} s wall for {mp:.1f} MP ({mp / seconds:.3f} MP/s, sharing the CPU with the "
              "LoG peers)", flush=True)
    for name, truth in truths.items():
        r = results[name]
        if not args.no_synseg:
            r["SynSeg"] = score_movie(truth, synseg.get(name, np.zeros((0, 4))))
            s = r["SynSeg"]
            print(f"  {name}: SynSeg det F1 {s['det_f1']:.3f} link R {s['link_recall']:.3f} alpha {s['alpha']:.3f}; "
                  f"LoG 0.2 det F1 {r['LoG 0.2']['det_f1']:.3f}", flush=True)
    text = table(results, args.snrs, args.densities)
    text += (f"\n\n{len(truths)} movies, {args.frames} frames of {args.size}^2 px, background {BACKGROUND:g} photons, "
             f"seed {args.seed}, model {args.model}; SynSeg {seconds:.0f} s, total {time.perf_counter() - t0:.0f} s")
    print(text)
    (out / "isbi_tracking.md").write_text(text + "\n")
    (out / "isbi_tracking.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                         "synseg_seconds": seconds, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
