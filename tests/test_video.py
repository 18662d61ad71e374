"""Time-lapse support: stacks scored frame by frame, track scoring, video generation, tracking in the CLI."""
import csv
import json
from pathlib import Path

import numpy as np

import evaluate
from synseg import tiffio

ROOT = Path(__file__).resolve().parents[1]


def disc_stack(centres_per_frame, shape=(40, 40), r=3):
    """uint8 0/1 TYX stack with a disc at each (y, x) of each frame."""
    yy, xx = np.indices(shape)
    out = np.zeros((len(centres_per_frame),) + shape, np.uint8)
    for t, centres in enumerate(centres_per_frame):
        for cy, cx in centres:
            out[t][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    return out


def write_truth_table(path: Path, tracks: dict) -> None:
    """Generator-style video table: frame, track_id, y, x, radius, brightness."""
    rows = [{"frame": t, "track_id": tid, "y": y, "x": x, "radius": 3.0, "brightness": 1.0}
            for tid, points in tracks.items() for t, (y, x) in enumerate(points)]
    tiffio.write_csv(path, rows, ["frame", "track_id", "y", "x", "radius", "brightness"])


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_stack_scores_equal_frame_by_frame_2d_scores(tmp_path):
    truth_tracks = {1: [(10, 10), (11, 12), (12, 14)], 2: [(28, 28), (27, 27), (26, 26)]}
    gt = disc_stack([[truth_tracks[1][t], truth_tracks[2][t]] for t in range(3)])
    # prediction: frame 0 perfect, frame 1 misses one vesicle, frame 2 shifted by a pixel plus a false spot
    pred = disc_stack([[(10, 10), (28, 28)], [(11, 12)], [(13, 14), (26, 26), (5, 35)]])
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    tiffio.write_tiff(gt_dir / "00000.tif", gt, pixel_size_um=0.1, axes="TYX")
    write_truth_table(gt_dir / "00000.csv", truth_tracks)
    tiffio.write_tiff(pred_dir / "00000_mask.tif", pred * 255, pixel_size_um=0.1, axes="TYX")
    out = tmp_path / "rep"
    code = evaluate.main(evaluate.get_args_parser().parse_args(
        ["--pred", str(pred_dir), "--gt", str(gt_dir), "--gt-points", str(gt_dir), "-o", str(out)]))
    assert code == 0
    rows = read_rows(out / "metrics.csv")[:-2]
    assert [r["frame"] for r in rows] == ["0", "1", "2"]
    for t, row in enumerate(rows):
        points = np.array([truth_tracks[1][t], truth_tracks[2][t]], float)
        alone = evaluate.evaluate_pair(pred[t], gt[t], points, None, 0.1)
        for key, value in alone.items():
            assert row[key] == evaluate._cell(value), (t, key)
    stacks = read_rows(out / "stacks.csv")
    assert stacks[0]["n_frames"] == "3"
    dice = [evaluate.evaluate_pair(pred[t], gt[t])["dice"] for t in range(3)]
    assert float(stacks[0]["dice_mean"]) == float(evaluate._cell(float(np.mean(dice))))
    assert (out / "frames.png").stat().st_size > 1000


def test_stack_points_need_a_frame_column(tmp_path, capsys):
    gt = disc_stack([[(10, 10)], [(10, 11)]])
    tiffio.write_tiff(tmp_path / "gt" / "a.tif", gt, axes="TYX")
    (tmp_path / "gt" / "a.csv").write_text("y,x\n10,10\n")
    tiffio.write_tiff(tmp_path / "pred" / "a_mask.tif", gt * 255, axes="TYX")
    code = evaluate.main(evaluate.get_args_parser().parse_args(
        ["--pred", str(tmp_path / "pred"), "--gt-points", str(tmp_path / "gt"), "-o", str(tmp_path / "rep")]))
    assert code == 1
    assert "'frame' column" in capsys.readouterr().err


def test_track_scores_against_generator_track_ids(tmp_path):
    truth = {1: [(10, 10), (11, 12), (12, 14)], 2: [(28, 28), (27, 27), (26, 26)]}
    gt = disc_stack([[truth[1][t], truth[2][t]] for t in range(3)])
    tiffio.write_tiff(tmp_path / "gt" / "v.tif", gt, axes="TYX")
    write_truth_table(tmp_path / "gt" / "v.csv", truth)
    tiffio.write_tiff(tmp_path / "pred" / "v_mask.tif", gt * 255, axes="TYX")
    # predicted tracks: identities swap between frames 1 and 2, so two of four links are wrong
    pred = [(7, 0, 10, 10), (7, 1, 11, 12), (7, 2, 26, 26), (9, 0, 28, 28), (9, 1, 27, 27), (9, 2, 12, 14)]
    tiffio.write_csv(tmp_path / "pred" / "tracks.csv",
                     [{"file": "movies/v.tif", "track_id": i, "frame": t, "y": y, "x": x} for i, t, y, x in pred])
    out = tmp_path / "rep"
    code = evaluate.main(evaluate.get_args_parser().parse_args(
        ["--pred", str(tmp_path / "pred"), "--gt-points", str(tmp_path / "gt"), "--tracks",
         str(tmp_path / "pred" / "tracks.csv"), "-o", str(out)]))
    assert code == 0
    row = read_rows(out / "tracks_metrics.csv")[0]
    assert row["image"] == "v"
    assert float(row["link_recall"]) == 0.5 and float(row["link_precision"]) == 0.5


def test_frame_interval_round_trips_through_the_tiff_tags(tmp_path):
    stack = np.zeros((4, 16, 16), np.uint16)
    tiffio.write_tiff(tmp_path / "v.tif", stack, pixel_size_um=0.1, axes="TYX", frame_interval_s=0.25)
    data, meta = tiffio.read_image(tmp_path / "v.tif")
    assert data.shape == (4, 16, 16) and meta["axes"] == "TYX"
    assert meta["frame_interval_s"] == 0.25 and abs(meta["pixel_size_um"] - 0.1) < 1e-6
    tiffio.write_tiff(tmp_path / "still.tif", stack[0], pixel_size_um=0.1)
    assert tiffio.read_image(tmp_path / "still.tif")[1]["frame_interval_s"] is None


def two_particle_video(n_frames=6, shape=(64, 64)):
    """uint16 TYX: two Gaussian spots moving in straight lines (one right, one up-left), and their truth rows."""
    yy, xx = np.indices(shape)
    paths = {1: [(20.0, 12.0 + 2.0 * t) for t in range(n_frames)],
             2: [(46.0 - 1.5 * t, 44.0 - 1.5 * t) for t in range(n_frames)]}
    video = np.full((n_frames,) + shape, 200.0)
    for points in paths.values():
        for t, (y, x) in enumerate(points):
            video[t] += 3000.0 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.8 ** 2))
    noise = np.random.default_rng(0).normal(0, 20, video.shape)
    return np.clip(video + noise, 0, 65535).astype(np.uint16), paths


def test_vesicle_cli_tracks_a_known_two_particle_video(tmp_path):
    from synseg.segment import segment_vesicle as SynSeg_Vesicle

    video, paths = two_particle_video()
    tiffio.write_tiff(tmp_path / "in" / "v.tif", video, pixel_size_um=0.1, axes="TYX", frame_interval_s=0.5)
    out = tmp_path / "out"
    args = ["-i", tmp_path / "in", "-o", out, "--track", "--no-contrast-cut", "--device", "cpu"]
    assert SynSeg_Vesicle.main(SynSeg_Vesicle.get_args_parser().parse_args([str(a) for a in args])) == 0
    tracks = read_rows(out / "tracks.csv")
    assert list(tracks[0]) == ["file", "track_id", "frame", "y", "x", "area", "intensity"]
    by_track = {}
    for r in tracks:
        by_track.setdefault(r["track_id"], []).append((int(r["frame"]), float(r["y"]), float(r["x"])))
    assert len(by_track) == 2
    for points in by_track.values():
        assert [f for f, _, _ in points] == list(range(6))
        start = min(paths, key=lambda k: np.hypot(*np.subtract(paths[k][0], points[0][1:])))
        for (f, y, x), (ty, tx) in zip(points, paths[start]):
            assert abs(y - ty) < 1.0 and abs(x - tx) < 1.0, (f, y, x, ty, tx)
    summary = {r["track_id"]: r for r in read_rows(out / "track_summary.csv")}
    speeds = sorted(float(r["mean_speed_um_s"]) for r in summary.values())
    # 2 px/frame and 1.5 * sqrt(2) px/frame at 0.1 um/px and 0.5 s/frame
    np.testing.assert_allclose(speeds, sorted([0.4, 1.5 * np.sqrt(2) * 0.2]), atol=0.05)
    assert all(r["duration_s"] == "2.5000" for r in summary.values())


def test_training_takes_each_frame_of_a_video_as_a_sample(tmp_path):
    from synseg.train import training
    from synseg.train import train_vesicle as train_vesicle_seg

    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("val", 1)):
        for i in range(n):
            mask = disc_stack([[tuple(rng.integers(6, 26, 2))] for _ in range(3)], shape=(32, 32))
            video = (mask.astype(np.int64) * 2000 + 100 + rng.integers(0, 50, mask.shape)).astype(np.uint16)
            tiffio.write_tiff(tmp_path / "d" / split / "img" / f"{i:05d}.tif", video, 0.1, "TYX", frame_interval_s=1.0)
            (tmp_path / "d" / split / "mask").mkdir(parents=True, exist_ok=True)
            np.save(tmp_path / "d" / split / "mask" / f"{i:05d}.npy", mask)
    (tmp_path / "d" / "generator.json").write_text(json.dumps({"pixel_size_um": 0.1}))
    pairs = training.find_pairs(tmp_path / "d" / "train" / "img", tmp_path / "d" / "train" / "mask")
    assert [p[2] for p in pairs] == [0, 1, 2, 0, 1, 2]
    image, mask = training.read_pair(*pairs[4])
    video = tiffio.read_image(pairs[4][0])[0]
    np.testing.assert_array_equal(image, video[1])
    np.testing.assert_array_equal(mask, np.load(pairs[4][1])[1])
    args = train_vesicle_seg.get_args_parser().parse_args(
        ["--data-dir", str(tmp_path / "d"), "--output-dir", str(tmp_path / "out"), "--device", "cpu",
         "--num-workers", "0", "--base-channels", "4", "--depth", "2", "--crop-size", "32", "--epochs", "1"])
    assert train_vesicle_seg.main(args) == 0
    assert (tmp_path / "out" / "best_vesicle_model.pth").is_file()


def generate(script, out, *extra):
    module = __import__(script)
    args = module.get_args_parser().parse_args(
        ["--output-dir", str(out), "--num-images", "3", "--image-size", "64", "--val-fraction", "0.34",
         "--seed", "7", *map(str, extra)])
    assert module.main(args) == 0


def files_of(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_frames_1_writes_the_still_images_byte_for_byte(tmp_path):
    from synseg.generate import dataset
    from synseg.generate import synth
    from synseg.generate import vesicles
    from synseg.generate import vesicle_generator as Vesicle_generator

    generate("Vesicle_generator", tmp_path / "one", "--frames", "1")
    written = files_of(tmp_path / "one")
    # the 2D path on its own: render_one of (seed, k), written as the still-image layout
    args = Vesicle_generator.get_args_parser().parse_args(
        ["--output-dir", str(tmp_path / "still"), "--num-images", "3", "--image-size", "64", "--val-fraction",
         "0.34", "--seed", "7"])
    run = dataset.Run.from_args(args)
    scene = synth.scene_from_args(args, vesicles.Vesicles, Vesicle_generator.BIT_DEPTH)
    assert dataset.generate_dataset(run, scene, kind="vesicle") == 0
    still = files_of(tmp_path / "still")
    meta_one, meta_still = (json.loads(d.pop("generator.json")) for d in (written, still))
    assert written == still  # every image, mask and table
    for meta in (meta_one, meta_still):
        meta["parameters"].pop("output_dir")
    assert meta_one == meta_still
    for k in range(3):
        image, mask, rows = synth.render_one(synth.image_rng(7, k), scene)
        paths = dataset.image_paths(tmp_path / "one", k, 3, 0.34)
        np.testing.assert_array_equal(tiffio.read_image(paths["img"])[0], image)
        np.testing.assert_array_equal(np.load(paths["mask"]), mask)
        assert len(tiffio.read_csv(paths["csv"])) == len(rows)
    assert "frames" not in meta_one and "frames" not in meta_one["parameters"]


def test_tiny_vesicle_video_shapes_tags_and_tables(tmp_path):
    generate("Vesicle_generator", tmp_path / "v", "--frames", "4", "--frame-interval", "0.25",
             "--num-spots", "20", "40", "--directed-fraction", "0.5", "0.5")
    img, meta = tiffio.read_image(tmp_path / "v" / "train" / "img" / "00000.tif")
    mask = np.load(tmp_path / "v" / "train" / "mask" / "00000.npy")
    assert img.shape == mask.shape == (4, 64, 64) and img.dtype == np.uint16 and mask.dtype == np.uint8
    assert meta["axes"] == "TYX" and meta["frame_interval_s"] == 0.25 and abs(meta["pixel_size_um"] - 0.1) < 1e-6
    rows = tiffio.read_csv(tmp_path / "v" / "train" / "mask" / "00000.csv")
    assert list(rows[0]) == ["frame", "track_id", "y", "x", "radius", "brightness"]
    assert {int(r["frame"]) for r in rows} <= set(range(4))
    from scipy import ndimage
    for t in range(4):  # one mask component per row, as in a still image
        n = ndimage.label(mask[t], structure=np.ones((3, 3)))[1]
        assert n == sum(int(r["frame"]) == t for r in rows)
    per_track = {}
    for r in rows:
        per_track.setdefault(r["track_id"], []).append(int(r["frame"]))
    assert all(f == sorted(set(f)) for f in per_track.values())
    assert any(len(f) == 4 for f in per_track.values())
    assert not np.array_equal(img[0], img[1])  # fresh noise, motion
    meta_json = (tmp_path / "v" / "generator.json").read_text()
    assert '"frames": 4' in meta_json and '"frame_interval_s": 0.25' in meta_json


def test_video_k_depends_only_on_seed_and_k(tmp_path):
    generate("Cytoskeleton_generator", tmp_path / "a", "--frames", "3")
    args = ["--output-dir", str(tmp_path / "b"), "--num-images", "1", "--image-size", "64", "--seed", "7",
            "--frames", "3", "--val-fraction", "0.34", "--workers", "1"]
    from synseg.generate import cytoskeleton_generator as Cytoskeleton_generator
    assert Cytoskeleton_generator.main(Cytoskeleton_generator.get_args_parser().parse_args(args)) == 0
    a, b = files_of(tmp_path / "a"), files_of(tmp_path / "b")
    assert a["train/img/00000.tif"] == b["train/img/00000.tif"]
    assert a["train/mask/00000.npy"] == b["train/mask/00000.npy"]
    img, meta = tiffio.read_image(tmp_path / "a" / "train" / "img" / "00000.tif")
    assert img.shape == (3, 64, 64) and img.dtype == np.uint8 and meta["axes"] == "TYX"
    assert np.load(tmp_path / "a" / "train" / "mask" / "00000.npy").shape == (3, 64, 64)
