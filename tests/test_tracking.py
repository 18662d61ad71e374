"""tracking.py on tiny hand-made videos whose tracks are known."""
import math
import random

import pytest

from synseg import tiffio
from synseg.segment import tracking


def crossing_pair(frames=10):
    """Two vesicles on straight lines whose paths cross, passing about 5 px apart (steps of 3 px).

    A moves right along y = 20; B moves down along x = 30 and reaches the crossing point (20, 30) two
    frames before A. In frame 7 B is 3.2 px from A's next position, nearly as close as from its own.
    """
    rows = []
    for t in range(frames):
        rows.append({"frame": t, "track_id": 1, "y": 20.0, "x": 5.0 + 3 * t, "area": 5, "intensity": 100.0})
        rows.append({"frame": t, "track_id": 2, "y": 2.0 + 3 * t, "x": 30.0, "area": 7, "intensity": 50.0})
    return rows


def detections(rows):
    """The rows without their track_id, as a detector would give them."""
    return [{k: v for k, v in r.items() if k != "track_id"} for r in rows]


def ids_by_area(rows):
    """{area: set of track ids}: each true vesicle of crossing_pair has its own area."""
    out = {}
    for r in rows:
        out.setdefault(r["area"], set()).add(r["track_id"])
    return out


def test_crossing_pair_is_linked_into_the_two_true_tracks():
    truth = crossing_pair()
    rows = tracking.link(detections(truth), search_range_px=5.0)
    assert len(rows) == len(truth)
    assert ids_by_area(rows) == {5: {2}, 7: {1}}  # numbered by first point (frame, y, x): B starts higher
    assert all(r["intensity"] == (100.0 if r["area"] == 5 else 50.0) for r in rows)  # extra columns pass
    assert [(r["track_id"], r["frame"]) for r in rows] == sorted((r["track_id"], r["frame"]) for r in rows)
    s = tracking.link_scores(rows, truth, tol_px=1.0)
    assert s["link_recall"] == s["link_precision"] == s["link_f1"] == 1.0
    assert s["n_true_links"] == s["n_pred_links"] == 18
    assert s["n_true_tracks"] == s["n_pred_tracks"] == 2
    assert s["n_matched_detections"] == s["n_true_detections"] == s["n_pred_detections"] == 20


def test_result_does_not_depend_on_row_order():
    dets = detections(crossing_pair())
    shuffled = dets[:]
    random.Random(0).shuffle(shuffled)
    assert tracking.link(shuffled, 5.0) == tracking.link(dets, 5.0)


def test_appearing_and_vanishing_vesicles_get_tracks_of_their_own():
    rows = [{"frame": t, "y": 10.0, "x": 2.0 * t} for t in range(6)]
    rows += [{"frame": t, "y": 40.0, "x": 40.0 + t} for t in range(3, 6)]  # appears in frame 3
    rows += [{"frame": t, "y": 70.0, "x": 70.0} for t in range(0, 2)]  # vanishes after frame 1
    out = tracking.link(rows, 4.0)
    assert [(r["track_id"], r["frame"], r["y"]) for r in out if r["frame"] in (0, 3)] == [
        (1, 0, 10.0), (1, 3, 10.0), (2, 0, 70.0), (3, 3, 40.0)]
    assert [t["n_points"] for t in tracking.track_summary(out)] == [6, 2, 3]


def test_vesicle_missing_for_one_frame_keeps_its_id_with_memory():
    rows = [{"frame": t, "y": 10.0, "x": 3.0 * t} for t in range(8) if t != 3]
    assert {r["track_id"] for r in tracking.link(rows, 4.0, memory=1)} == {1}
    assert [r["track_id"] for r in tracking.link(rows, 4.0, memory=0)] == [1, 1, 1, 2, 2, 2, 2]
    # The gap is bridged per frame: 6 px over two frames is within 4 px per frame, 12 px is not.
    fast = [{"frame": t, "y": 10.0, "x": 6.0 * t} for t in range(8) if t != 3]
    assert len({r["track_id"] for r in tracking.link(fast, 4.0, memory=1)}) == len(fast)
    # Two missing frames need memory=2.
    rows = [{"frame": t, "y": 10.0, "x": 3.0 * t} for t in range(8) if t not in (3, 4)]
    assert [r["track_id"] for r in tracking.link(rows, 4.0, memory=1)] == [1, 1, 1, 2, 2, 2]
    assert {r["track_id"] for r in tracking.link(rows, 4.0, memory=2)} == {1}


def test_memory_does_not_join_a_vesicle_to_a_stranger_far_away():
    rows = [{"frame": t, "y": 10.0, "x": 10.0} for t in range(3)]
    rows += [{"frame": t, "y": 60.0, "x": 60.0} for t in range(4, 7)]
    assert [r["track_id"] for r in tracking.link(rows, 5.0, memory=2)] == [1, 1, 1, 2, 2, 2]


def test_search_range_is_inclusive_and_links_beyond_it_are_refused():
    rows = [{"frame": 0, "y": 0.0, "x": 0.0}, {"frame": 1, "y": 3.0, "x": 4.0}]
    assert [r["track_id"] for r in tracking.link(rows, 5.0)] == [1, 1]
    assert [r["track_id"] for r in tracking.link(rows, 4.99)] == [1, 2]


def test_identity_swap_is_penalised():
    truth = crossing_pair()
    swapped = [dict(r) for r in truth]
    for r in swapped:
        if r["frame"] >= 6:  # the tracks exchange identities between frames 5 and 6
            r["track_id"] = 3 - r["track_id"]
    s = tracking.link_scores(swapped, truth)
    assert s["n_true_links"] == s["n_pred_links"] == 18
    assert s["n_true_links_recovered"] == s["n_pred_links_correct"] == 16
    assert s["link_recall"] == s["link_precision"] == pytest.approx(16 / 18)
    assert s["n_matched_detections"] == 20  # every detection is right; only the linking is wrong


def test_missed_detection_costs_link_recall_but_not_link_recall_detected():
    truth = crossing_pair()
    found = [r for r in truth if not (r["area"] == 5 and r["frame"] == 4)]
    rows = tracking.link(detections(found), 5.0, memory=1)
    s = tracking.link_scores(rows, truth)
    assert s["n_true_links_recovered"] == 16 and s["link_recall"] == pytest.approx(16 / 18)
    assert s["link_recall_detected"] == 1.0 and s["link_precision"] == 1.0
    assert s["link_precision_detected"] == 1.0
    assert s["n_pred_links"] == 17  # one link bridges the gap
    assert s["detection_recall"] == pytest.approx(19 / 20) and s["detection_precision"] == 1.0


def test_false_detection_costs_link_precision_but_not_link_precision_detected():
    # A's track runs through a false spot in frame 4 instead of A (which was missed): its two links are
    # wrong end to end, but over its real points alone the track still follows A.
    truth = crossing_pair()
    pred = [dict(r) for r in truth if not (r["track_id"] == 1 and r["frame"] == 4)]
    pred.append({"frame": 4, "track_id": 1, "y": 24.0, "x": 17.0})  # 4 px beyond the 3 px tolerance
    s = tracking.link_scores(pred, truth)
    assert s["n_pred_links"] == 18 and s["n_pred_links_correct"] == 16
    assert s["link_precision"] == pytest.approx(16 / 18) and s["link_precision_detected"] == 1.0
    assert s["link_recall"] == pytest.approx(16 / 18) and s["link_recall_detected"] == 1.0
    assert s["detection_precision"] == pytest.approx(19 / 20)


def test_summary_speeds_in_pixels_and_um_per_s():
    # 3-4-5 steps: 5 px per frame; frame 3 missed, so one step spans two frames (10 px).
    rows = [{"track_id": 7, "frame": t, "y": 3.0 * t, "x": 4.0 * t} for t in (0, 1, 2, 4)]
    rows.append({"track_id": 9, "frame": 2, "y": 0.0, "x": 0.0})
    (a, b) = tracking.track_summary(rows, pixel_size_um=0.1, frame_interval_s=0.5)
    assert tuple(a) == tracking.SUMMARY_COLUMNS
    assert (a["track_id"], a["first_frame"], a["last_frame"], a["duration_frames"], a["n_points"]) == (7, 0, 4, 4, 4)
    assert a["mean_step_px"] == pytest.approx(20 / 3)
    assert a["mean_speed_px_per_frame"] == pytest.approx(5.0)
    assert a["displacement_px"] == pytest.approx(20.0)
    assert a["duration_s"] == pytest.approx(2.0)
    assert a["mean_speed_um_s"] == pytest.approx(1.0)  # 5 px * 0.1 um / 0.5 s
    assert b["n_points"] == 1 and b["duration_frames"] == 0
    assert b["mean_step_px"] is None and b["mean_speed_um_s"] is None and b["duration_s"] == 0.0
    plain = tracking.track_summary(rows)[0]
    assert plain["duration_s"] is None and plain["mean_speed_um_s"] is None
    assert plain["mean_speed_px_per_frame"] == pytest.approx(5.0)


def test_tracks_survive_a_csv_round_trip(tmp_path):
    truth = crossing_pair()
    tiffio.write_csv(tmp_path / "truth.csv", truth)
    tiffio.write_csv(tmp_path / "dets.csv", detections(truth))
    rows = tracking.link(tiffio.read_csv(tmp_path / "dets.csv"), 5.0)  # every cell a string
    assert isinstance(rows[0]["frame"], int) and isinstance(rows[0]["y"], float) and rows[0]["area"] in ("5", "7")
    tiffio.write_csv(tmp_path / "tracks.csv", rows)
    s = tracking.link_scores(tiffio.read_csv(tmp_path / "tracks.csv"), tiffio.read_csv(tmp_path / "truth.csv"))
    assert s["link_recall"] == s["link_precision"] == 1.0
    tiffio.write_csv(tmp_path / "summary.csv", tracking.track_summary(rows), fields=tracking.SUMMARY_COLUMNS)
    assert tiffio.read_csv(tmp_path / "summary.csv")[0]["duration_s"] == ""  # unknown: an empty cell


def test_empty_input():
    assert tracking.link([], 5.0) == []
    assert tracking.track_summary([]) == []
    s = tracking.link_scores([], [])
    assert s["link_recall"] == s["link_precision"] == 1.0 and s["n_true_links"] == s["n_pred_links"] == 0
    s = tracking.link_scores([], crossing_pair())
    assert s["link_recall"] == 0.0 and s["link_precision"] == 0.0 and s["n_true_links"] == 18
    one = tracking.link([{"frame": 3, "y": 1.0, "x": 2.0}], 5.0)
    assert one == [{"track_id": 1, "frame": 3, "y": 1.0, "x": 2.0}]


def test_default_search_range():
    assert tracking.default_search_range() == tracking.DEFAULT_SEARCH_RANGE_PX
    assert tracking.default_search_range(0.1, 0.5) == pytest.approx(10.0)  # 2 um/s * 0.5 s / 0.1 um
    assert tracking.default_search_range(0.1, 0.5, max_speed_um_s=1.0) == pytest.approx(5.0)
    assert tracking.default_search_range(0.2, 0.01) == tracking.MIN_SEARCH_RANGE_PX
    with pytest.raises(ValueError, match="pixel_size_um must be > 0"):
        tracking.default_search_range(0.0, 0.5)


@pytest.mark.parametrize("rows, kwargs, message", [
    ([{"frame": 0, "y": 1.0}], {}, "lacks x"),
    ([{"frame": 0.5, "y": 1.0, "x": 1.0}], {}, "whole numbers"),
    ([{"frame": 0, "y": "abc", "x": 1.0}], {}, "must be numbers"),
    ([{"frame": 0, "y": math.nan, "x": 1.0}], {}, "finite"),
    ([], {"search_range_px": 0.0}, "search_range_px must be > 0"),
    ([], {"memory": -1}, "memory must be"),
])
def test_bad_detections_are_refused_with_the_value(rows, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tracking.link(rows, **{"search_range_px": 5.0, **kwargs})


def test_scoring_refuses_a_track_with_two_points_in_one_frame():
    rows = [{"frame": 0, "track_id": 1, "y": 0.0, "x": 0.0}, {"frame": 0, "track_id": 1, "y": 5.0, "x": 0.0}]
    with pytest.raises(ValueError, match="track 1 has two points in frame 0"):
        tracking.link_scores(rows, rows)
    with pytest.raises(ValueError, match="lacks track_id"):
        tracking.track_summary([{"frame": 0, "y": 0.0, "x": 0.0}])


def laptrack_successors(coords, cost, reach, memory):
    """The successor map laptrack.LapTrack gives with link()'s settings (the library link() called before)."""
    laptrack = pytest.importorskip("laptrack")
    tracker = laptrack.LapTrack(
        metric="sqeuclidean", cutoff=cost, track_start_cost=2 * cost, track_end_cost=2 * cost,
        gap_closing_metric=tracking._gap_cost, gap_closing_cutoff=reach if memory else False,
        gap_closing_max_frame_count=memory + 1, segment_start_cost=2 * reach, segment_end_cost=2 * reach,
        no_splitting_cost=2 * reach, no_merging_cost=2 * reach, splitting_cutoff=False, merging_cutoff=False)
    graph = tracker.predict(coords)
    out = {}
    for a, b in graph.edges:
        assert a not in out
        out[tuple(map(int, a))] = tuple(map(int, b))
    return out


def random_video(seed, frames=25, n=30, size=60.0, step=2.5, keep=0.85, clutter=3):
    """Random walkers in a small field (crowded: links compete), some missed per frame, spurious points, empty
    frames, integer-rounded coordinates in some frames (equal costs), as (y, x, frame) arrays per frame."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, size, (n, 2))
    coords = []
    for t in range(frames):
        pos += rng.normal(0, step, pos.shape)
        pts = pos[rng.random(n) < keep]
        pts = np.concatenate([pts, rng.uniform(0, size, (rng.integers(0, clutter + 1), 2))])
        if t % 7 == 3:
            pts = np.round(pts)
        if t == 11 and seed % 2:
            pts = pts[:0]
        pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
        coords.append(np.column_stack([pts, np.full(len(pts), float(t))]))
    return coords


@pytest.mark.parametrize("seed", range(6))
def test_own_lap_tracker_gives_laptracks_links(seed):
    """tracking.lap_successors builds laptrack's cost matrices entry for entry: the same links, gaps closed alike."""
    coords = random_video(seed)
    for search, memory in ((5.0, 0), (5.0, 1), (3.0, 2), (8.0, 1)):
        reach = search ** 2 * (1 + 1e-9)
        cost = reach + 1.0
        assert tracking.lap_successors(coords, cost, reach, memory) == laptrack_successors(coords, cost, reach, memory)


def test_link_does_not_import_laptrack():
    import subprocess
    import sys

    code = ("import sys; from synseg.segment import tracking; "
            "tracking.link([{'frame': t, 'y': 1.0 + t, 'x': 2.0} for t in range(5)], 3.0, memory=1); "
            "print(sorted(m for m in ('laptrack', 'pandas', 'networkx', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
