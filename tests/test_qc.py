"""The quality check (synseg/segment/qc.py): its rules on tiny images made here, its columns and log lines in a
batch, and the refusal of a calibration made for other weights."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import unet
from synseg import tasks
from synseg.segment import qc
from synseg.segment import segment_vesicle as SynSeg_Vesicle
from tests.test_segment import read_rows, run_inprocess, write

LOCAL = tasks.LOCAL_CONTRAST


def spots_image(size=128, seed=0) -> np.ndarray:
    """A normal fluorescence spot image: 60 diffraction-limited spots (sigma 1.2 px, 20-60x the noise) on a
    dim background with shot and read noise, 16 bit."""
    rng = np.random.default_rng(seed)
    density = np.zeros((size, size), np.float32)
    ys, xs = rng.integers(4, size - 4, (2, 60))
    density[ys, xs] = rng.uniform(0.5, 1.5, 60)
    density = cv2.GaussianBlur(density, (0, 0), 1.2) * 2 * np.pi * 1.2 ** 2
    photons = 20 + 600 * density
    return np.clip(100 + 2 * (rng.poisson(photons) + 2 * rng.standard_normal(photons.shape)), 0, 65535).astype(
        np.uint16)


def reasons(image) -> list[str]:
    return qc.check(qc.image_figures(image, 1.0, LOCAL), "vesicle")


def test_a_normal_spot_image_passes():
    figures = qc.image_figures(spots_image(), 1.0, LOCAL)
    assert qc.check(figures, "vesicle") == []
    assert figures["qc_peak_snr"] > 10 and 0.5 < figures["qc_width"] < 2.5 and figures["qc_blobness"] > 0.5


def test_pure_noise_is_flagged_no_structure():
    rng = np.random.default_rng(1)
    assert "no_structure" in reasons(np.clip(1000 + 50 * rng.standard_normal((128, 128)), 0, None).astype(np.uint16))
    assert "no_structure" in reasons(rng.poisson(5.0, (128, 128)).astype(np.uint16))


def test_saturated_and_mostly_zero_fields_are_flagged_with_their_reason():
    image = spots_image()
    bright = np.clip(image.astype(np.float64) * 65535 / np.percentile(image, 40), 0, 65535).astype(np.uint16)
    assert "saturated" in reasons(bright)
    empty = np.clip(image.astype(np.float64) - np.percentile(image, 95), 0, None).astype(np.uint16)
    assert "mostly_zero" in reasons(empty)
    assert "saturated" not in reasons(empty) and "mostly_zero" not in reasons(bright)


def test_jpeg_screenshot_is_flagged():
    image = spots_image(seed=3)
    grey = np.clip(image / np.percentile(image, 99.5) * 255, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, 60])
    assert "jpeg" in reasons(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE))
    assert qc.jpeg_comb(grey) < 1.5  # the same image before compression


def test_check_names_each_figure_out_of_range_once():
    figures = {"qc_saturated": 0.5, "qc_zero": 0.9, "qc_peak_snr": 20.0, "qc_tail": 5.0, "qc_uncertain": 0.9,
               "qc_unexplained": 0.99, "qc_width": float("nan")}
    assert qc.check(figures, "vesicle") == ["saturated", "mostly_zero", "uncertain", "wrong_structure"]
    assert qc.check({"qc_peak_snr": 20.0}, "vesicle") == []
    words = {w for pair in qc.REASONS.values() for w in pair if w}
    assert words <= set(qc.ADVICE)  # every reason has its advice (README: the same words)
    assert qc.describe(["jpeg", "too_fine"]) == f"jpeg: {qc.ADVICE['jpeg']}; too_fine: {qc.ADVICE['too_fine']}"


def calibration_file(path, weights: str, coef=0.0, intercept=0.7):
    n = len(qc.SCORE_INPUTS)
    path.write_text(json.dumps({"format": qc.FORMAT, "task": "vesicle", "weights_sha256": weights,
                                "inputs": list(qc.SCORE_INPUTS), "mean": [0.0] * n, "scale": [1.0] * n,
                                "coef": [coef] * n, "intercept": intercept, "mae": 0.05}))
    return path


def test_a_calibration_for_other_weights_is_refused(tmp_path, models):
    model, _ = unet.load_model(models["vesicle"])
    other, _ = unet.load_model(models["cytoskeleton"])
    mine, theirs = qc.weights_hash(model), qc.weights_hash(other)
    assert mine != theirs and mine == qc.weights_hash(unet.load_model(models["vesicle"])[0])
    path = calibration_file(tmp_path / "qc.json", theirs)
    calibration, note = qc.load_calibration(path, "vesicle", mine)
    assert calibration is None and "other weights" in note
    calibration, note = qc.load_calibration(calibration_file(tmp_path / "ok.json", mine), "vesicle", mine)
    assert calibration is not None and calibration.predict({"qc_peak_snr": 10.0}) == pytest.approx(0.7)
    assert qc.load_calibration(tmp_path / "ok.json", "cytoskeleton", mine)[0] is None  # another task
    assert qc.load_calibration(tmp_path / "missing.json", "vesicle", mine)[0] is None


def test_batch_writes_qc_columns_logs_flags_and_counts_them(tmp_path, models, capsys):
    model, _ = unet.load_model(models["vesicle"])
    src, out = tmp_path / "in", tmp_path / "out"
    image = spots_image()
    write(src / "a_normal.tif", image, pixel_size=0.1)
    write(src / "b_saturated.tif", np.clip(image.astype(np.float64) * 65535 / np.percentile(image, 40), 0,
                                           65535).astype(np.uint16), pixel_size=0.1)
    write(src / "c_empty.tif", np.clip(image.astype(np.float64) - np.percentile(image, 95), 0, None).astype(
        np.uint16), pixel_size=0.1)
    wrong = calibration_file(tmp_path / "wrong.json", "0" * 64)
    assert run_inprocess(SynSeg_Vesicle, "-i", src, "-o", out, "-m", models["vesicle"],
                         "--qc-calibration", wrong) == 0  # advice, not a failure
    err = capsys.readouterr().err
    rows = {r["file"].split("/")[-1]: r for r in read_rows(out / "summary.csv")}
    assert set(qc.COLUMNS) <= set(next(iter(rows.values())))
    assert "saturated" in rows["b_saturated.tif"]["qc"].split("+")
    assert "mostly_zero" in rows["c_empty.tif"]["qc"].split("+")
    assert all(r["expected_score"] == "" for r in rows.values()) and "other weights" in err
    flagged = [name for name, r in rows.items() if r["qc"] != "ok"]
    assert f"{len(flagged)} flagged by the quality check" in err.splitlines()[-1]
    for name in flagged:
        assert sum(f"{name}: qc: " in line for line in err.splitlines()) == 1
    assert (out / "b_saturated_mask.tif").is_file()  # flagged files are still segmented and written
    # a calibration made for these weights gives an expected score
    right = calibration_file(tmp_path / "right.json", qc.weights_hash(model), intercept=0.42)
    assert run_inprocess(SynSeg_Vesicle, "-i", src / "a_normal.tif", "-o", tmp_path / "out2", "-m", models["vesicle"],
                         "--qc-calibration", right) == 0
    assert read_rows(tmp_path / "out2" / "summary.csv")[0]["expected_score"] == "0.420"


def _jpeg_comb_reference(plane) -> float:
    """jpeg_comb as first written: the full 8x8 DCT of every block, each frequency and step in a loop."""
    h, w = plane.shape[0] // 8 * 8, plane.shape[1] // 8 * 8
    blocks = np.asarray(plane[:h, :w], np.float64).reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3).reshape(
        -1, 8, 8)
    c = qc._dct_matrix()
    coef, best = c @ blocks @ c.T, 1.0
    for u, v in qc.JPEG_FREQUENCIES:
        values = np.rint(coef[:, u, v]).astype(np.int64)
        values = values[values != 0]
        for q in range(2, 17):
            share = float(np.mean(values % q == 0))
            best = max(best, q * (share - 2.0 * np.sqrt(share * (1.0 - share) / len(values))))
    return best


def test_the_cheap_figures_equal_the_plain_computations():
    """The check's shortcuts (issue 31: at most 10% of a batch's time) give the plain computations' numbers:
    percentiles from a partial sort or a histogram, the JPEG comb from the few DCT terms it reads, and the
    figures from a noise model fitted once for network and check."""
    from synseg import normalization
    from synseg.segment import tiling

    rng = np.random.default_rng(4)
    for shape in ((8, 8), (37, 91), (256, 256)):
        z = (rng.standard_normal(shape) * rng.uniform(0.1, 50)).astype(np.float32)
        assert qc.percentile_999(z) == pytest.approx(float(np.percentile(z, 99.9)), rel=1e-6, abs=1e-12)
    big = rng.standard_normal((1024, 1024)).astype(np.float32)  # the partial sort of the top values only
    for z in (big, np.where(big > 3.2, big, 0).astype(np.float32), np.round(big * 2).astype(np.float32)):
        assert qc.percentile_999(z) == float(np.percentile(z, 99.9))
    image = spots_image(seed=5)
    grey = np.clip(image / np.percentile(image, 99.5) * 255, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, 70])
    for plane in (image, grey, cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)):
        assert qc.jpeg_comb(plane) == pytest.approx(_jpeg_comb_reference(plane), abs=1e-9)
    for factor in (1.0, 0.5):
        model = qc.noise_model_at_scale(image, factor, LOCAL)
        plain, shared = qc.image_figures(image, factor, LOCAL), qc.image_figures(image, factor, LOCAL, model)
        tail = np.percentile(image, [0.1, 50, 99.9])
        assert plain["qc_tail"] == pytest.approx((tail[2] - tail[1]) / (tail[1] - tail[0]), rel=1e-9)
        for key in qc.FIGURES:
            if key in plain:
                assert shared[key] == pytest.approx(plain[key], rel=1e-9, nan_ok=True), key
        x = tiling.resize_plane(image.astype(np.float32), (64, 64)) if factor != 1.0 else image
        assert model == normalization.noise_model(x, LOCAL)  # what the network's normalisation fits
    assert qc.noise_model_at_scale(image, 1.0, {"mode": "percentile"}) is None


def test_mask_shapes_tell_lines_spots_and_solid_blobs_apart():
    """qc_elongated (vesicles): pieces of line in the mask, not spots; qc_solid (filaments): solid blobs, not
    lines; both at the model's scale (factor), and each turns into its reason for its task only."""
    spots = np.zeros((96, 96), np.uint8)
    for y in range(8, 96, 16):
        for x in range(8, 96, 16):
            cv2.circle(spots, (x, y), 2, 1, -1)
    lines = np.zeros((96, 96), np.uint8)
    for y in range(8, 96, 16):
        cv2.line(lines, (5, y), (60, y + 10), 1, 2)
    blobs = np.zeros((96, 96), np.uint8)
    cv2.circle(blobs, (30, 30), 14, 1, -1)
    cv2.circle(blobs, (70, 66), 11, 1, -1)
    assert qc.elongated(spots, 1.0) == (0.0, 36)
    assert qc.elongated(lines, 1.0)[0] == 1.0 and qc.elongated(lines | spots, 1.0)[0] > 0.5
    assert qc.elongated(spots, 0.5) == (0.0, 36)  # spots of 13 px are 3 model px at half scale: not counted
    assert qc.solid(lines, 1.0) == 0.0 and qc.solid(spots, 1.0) == 0.0
    assert qc.solid(blobs, 1.0) > 0.4 and qc.solid(blobs, 0.25) == 0.0  # 4x finer pixels: 5.5-7 model px wide
    assert qc.elongated(np.zeros((8, 8), bool), 1.0) == (0.0, 0) and qc.solid(np.zeros((8, 8), bool), 1.0) == 0.0
    figures = {"qc_peak_snr": 20.0, "qc_elongated": 0.3, "qc_solid": 0.3}
    assert qc.check(figures, "vesicle") == ["wrong_structure"]
    assert qc.check(figures, "cytoskeleton") == ["too_coarse"]


def test_score_inputs_and_an_earlier_calibration_format(tmp_path, models):
    """log_ and inv_ inputs; a synseg-qc/2 file (inputs this code still computes) is still read."""
    x = qc.score_features({"count": 3.0, "qc_peak_snr": float("nan")}, ("log_count", "inv_count", "qc_peak_snr"))
    np.testing.assert_allclose(x, [np.log(4.0), 0.25, 0.0])
    assert "qc_kept" not in qc.SCORE_INPUTS and "inv_count" in qc.SCORE_INPUTS
    model, _ = unet.load_model(models["vesicle"])
    path = calibration_file(tmp_path / "old.json", qc.weights_hash(model))
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "format": "synseg-qc/2"}))
    assert qc.load_calibration(path, "vesicle", qc.weights_hash(model))[0] is not None
    path.write_text(json.dumps({**record, "format": "synseg-qc/1"}))
    assert qc.load_calibration(path, "vesicle", qc.weights_hash(model))[0] is None


def test_a_measured_plane_fits_its_noise_model_once(tmp_path, monkeypatch):
    """With local-contrast normalisation the network and the check share one noise-model fit per measured plane
    (Segmenter.qc_models -> tiling stats and qc.image_figures), and the figures equal the check's own fit."""
    from synseg import normalization
    from tests.test_predict import sharp_model

    path = tmp_path / "local.pth"
    unet.save_checkpoint(path, sharp_model(seed=1), task="vesicle", normalization=dict(LOCAL), pixel_size_um=0.1)
    write(tmp_path / "in" / "a.tif", spots_image(96, seed=2), pixel_size=0.1)
    fits = []
    real_fit = normalization.noise_model
    monkeypatch.setattr(normalization, "noise_model", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    assert run_inprocess(SynSeg_Vesicle, "-i", tmp_path / "in", "-o", tmp_path / "out", "-m", path) == 0
    assert len(fits) == 1
    row = read_rows(tmp_path / "out" / "summary.csv")[0]
    own = qc.image_figures(spots_image(96, seed=2), 1.0, LOCAL)  # fitted here, on its own
    assert float(row["qc_peak_snr"]) == pytest.approx(own["qc_peak_snr"], rel=1e-3)


def test_the_network_and_the_check_share_a_measured_plane_local_contrast(tmp_path, monkeypatch):
    """Where the network normalises an unpadded measured plane by local contrast (whole, alone or in a stack, or
    tile by tile), the check reads that plane's local contrast (tiling contrast= -> qc.image_figures z) instead
    of a second grey opening, and its figures are the check's own to the bit; a padded plane (90 px: not a
    multiple of 2**depth) is normalised again by the check."""
    from synseg import normalization
    from tests.test_predict import sharp_model

    path = tmp_path / "local.pth"
    unet.save_checkpoint(path, sharp_model(seed=1), task="vesicle", normalization=dict(LOCAL), pixel_size_um=0.1)
    stack = np.stack([spots_image(96, seed=s) for s in (2, 3, 4)])
    write(tmp_path / "in" / "a.tif", stack[0], pixel_size=0.1)
    write(tmp_path / "in" / "b.tif", stack, pixel_size=0.1, axes="TYX")
    write(tmp_path / "in" / "c.tif", stack[1][:90, :90], pixel_size=0.1)
    write(tmp_path / "big" / "d.tif", spots_image(192, seed=6), pixel_size=0.1)
    openings, kept = [], []
    real_background, real_contrast = normalization.local_background, normalization.local_contrast
    monkeypatch.setattr(normalization, "local_background", lambda *a: openings.append(1) or real_background(*a))
    monkeypatch.setattr(normalization, "local_contrast",
                        lambda x, spec, model, keep=None: kept.append(keep is not None)
                        or real_contrast(x, spec, model, keep))
    assert run_inprocess(SynSeg_Vesicle, "-i", tmp_path / "in", "-o", tmp_path / "out", "-m", path) == 0
    # per measured plane: one fit (noise_model) and one normalisation (network, kept for the check); c: the
    # check's own normalisation besides
    assert len(openings) == 2 * 5 + 1 and kept.count(True) == 4
    openings.clear()
    assert run_inprocess(SynSeg_Vesicle, "-i", tmp_path / "big", "-o", tmp_path / "out", "-m", path,
                         "--tile-size", "96", "--overlap", "40") == 0  # 3 x 3 tiles of 96 px
    assert len(openings) == 1 + 9
    rows = {Path(r["file"]).name: r for r in read_rows(tmp_path / "out" / "summary.csv")}
    for name, planes in (("a.tif", stack[:1]), ("b.tif", stack), ("c.tif", stack[1:2, :90, :90]),
                         ("d.tif", [spots_image(192, seed=6)])):
        own = [qc.image_figures(p, 1.0, LOCAL) for p in planes]
        for key in ("qc_peak_snr", "qc_extent", "qc_width", "qc_blobness"):
            assert rows[name][key] == f"{np.median([f[key] for f in own]):.4g}", (name, key)


def test_the_local_contrast_of_a_tiled_plane_is_the_whole_plane_s():
    """tiling.plane_probability's contrast: the tiles' local contrast away from their inner edges, put together,
    equals the whole plane's to the bit; overlaps too narrow to cover the plane give none; a padded plane none."""
    import torch

    from synseg import normalization
    from synseg.segment import tiling
    from tests.test_predict import sharp_model

    net = tiling.prepare_model(sharp_model(seed=1), torch.device("cpu"))
    image = spots_image(200, seed=7)
    for factor in (1.0, 0.8):
        x = image.astype(np.float32)
        if factor != 1.0:
            x = tiling.resize_plane(x, (160, 160))
        model = normalization.noise_model(x, LOCAL)
        whole = normalization.local_contrast(x, {**LOCAL, "compress": None}, model)
        for tile, overlap, shared in ((512, 16, True), (64, 32, True), (48, 28, True), (64, 20, False)):
            contrast = {}
            prob = tiling.plane_probability(net, image, factor, LOCAL, tile_size=tile, overlap=overlap, batch_size=2,
                                            device=torch.device("cpu"), stats=model, contrast=contrast)
            plain = tiling.plane_probability(net, image, factor, LOCAL, tile_size=tile, overlap=overlap,
                                             batch_size=2, device=torch.device("cpu"), stats=model)
            assert np.array_equal(prob, plain)  # the network's input is untouched
            assert ("z" in contrast) == shared, (factor, tile, overlap)
            if shared:
                assert np.array_equal(contrast["z"], whole), (factor, tile, overlap)
    contrast = {}
    tiling.plane_probability(net, image[:198, :198], 1.0, LOCAL, tile_size=64, overlap=32, batch_size=2,
                             device=torch.device("cpu"), contrast=contrast)
    assert contrast == {}
