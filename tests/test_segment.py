"""SynSeg_Vesicle.py / SynSeg_Cytoskeleton.py end to end on tiny models and images made here.

A few runs go through a subprocess (the real command line); the rest call main(args) in-process to stay quick.
"""
import csv
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tifffile
from scipy import ndimage

from synseg.segment import segment_cytoskeleton as SynSeg_Cytoskeleton
from synseg.segment import segment_vesicle as SynSeg_Vesicle
from synseg import tiffio
from tests.conftest import ROOT
from tests.test_predict import smooth_noise


def blobs(shape, seed=0, dtype=np.uint16, scale=3000.0):
    """A bright-spot image of the given dtype."""
    x = smooth_noise(shape, seed=seed, sigma=1.5)
    x = np.clip(x, 0, None) * scale + 100
    return x.astype(dtype)


def write(path, data, pixel_size=None, axes=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    tiffio.write_tiff(path, data, pixel_size_um=pixel_size, axes=axes)
    return path


def cli(script, *args):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)


def run_inprocess(module, *args):
    return module.main(module.get_args_parser().parse_args([str(a) for a in args]))


def read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def components(mask):
    return ndimage.label(mask > 0, structure=np.ones((3, 3)))[1]


def test_vesicle_folder_end_to_end(tmp_path, models):
    src, out = tmp_path / "in", tmp_path / "out"
    write(src / "a.tif", blobs((100, 120)), pixel_size=0.2)  # twice the model's pixel size: rescaled x2
    write(src / "b.tif", blobs((90, 70), seed=1, dtype=np.uint8, scale=60.0))
    write(src / "sub" / "c.tif", blobs((40, 40)))  # not searched without --recursive
    r = cli("SynSeg_Vesicle.py", "-i", src, "-o", out, "-m", models["vesicle"], "--save-prob", "--overlay",
            "--object-csv", "--tile-size", "128", "--threshold", "otsu", "--spot-core", "0")
    assert r.returncode == 0, r.stderr
    assert "rescaled x2.000" in r.stderr and "pixel size unknown" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.tif", "a_overlay.png", "a_prob.tif", "b_mask.tif",
                                                     "b_overlay.png", "b_prob.tif", "objects.csv", "summary.csv"]
    mask, meta = tiffio.read_image(out / "a_mask.tif")
    assert mask.shape == (100, 120) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert meta["pixel_size_um"] == pytest.approx(0.2, rel=1e-4) and meta["axes"] == "YX"
    prob, _ = tiffio.read_image(out / "a_prob.tif")
    assert prob.dtype == np.float32 and 0 <= prob.min() and prob.max() <= 1
    rows = {os.path.basename(r["file"]): r for r in read_rows(out / "summary.csv")}
    t = float(rows["a.tif"]["threshold"])
    assert np.all(prob[mask > 0] > t - 1e-3)  # without --spot-core: the thresholded map minus the split lines
    removed = (prob > t + 1e-3) & (mask == 0)  # the split lines: thin, so they lie next to kept pixels
    beside = ndimage.binary_dilation(mask > 0, structure=np.ones((3, 3)))
    assert np.count_nonzero(removed & ~beside) <= 0.05 * np.count_nonzero(removed)
    overlay = cv2.imread(str(out / "b_overlay.png"))
    assert overlay.shape == (90, 2 * 70 + 4, 3)  # image | image with the mask outlined
    assert np.all(overlay[..., :70, 0] == overlay[..., :70, 2])  # left panel grey
    assert np.any(overlay[..., 74:, 0] != overlay[..., 74:, 2])  # right panel has the yellow ring
    assert set(rows) == {"a.tif", "b.tif"}
    a = rows["a.tif"]
    # each connected object of the written mask is one counted vesicle
    assert int(a["count"]) == components(mask) > 0
    assert a["area_unit"] == "um^2" and rows["b.tif"]["area_unit"] == "px^2"
    assert float(a["foreground_fraction"]) == pytest.approx(np.count_nonzero(mask) / mask.size, abs=1e-5)
    assert float(a["scale"]) == pytest.approx(2.0)
    objects = read_rows(out / "objects.csv")
    assert len(objects) == sum(int(r["count"]) for r in rows.values())
    mean_area = np.mean([float(o["area"]) for o in objects if o["file"].endswith("a.tif")])
    assert float(a["mean_area"]) == pytest.approx(mean_area, rel=1e-4)


def test_recursive_and_glob_inputs(tmp_path, models):
    src, out = tmp_path / "in", tmp_path / "out"
    write(src / "x.tif", blobs((48, 40)))
    write(src / "deep" / "y.tiff", blobs((40, 48), seed=2))
    assert run_inprocess(SynSeg_Vesicle, "-i", src, "-o", out, "-m", models["vesicle"], "--recursive") == 0
    assert (out / "x_mask.tif").is_file() and (out / "deep" / "y_mask.tif").is_file()
    assert run_inprocess(SynSeg_Vesicle, "-i", f"{src}/*/*.tiff", "-o", tmp_path / "g",
                         "-m", models["vesicle"]) == 0
    assert [p.name for p in (tmp_path / "g").glob("*.tif")] == ["y_mask.tif"]


def test_stacks_keep_shape_and_axes(tmp_path, models):
    src, out = tmp_path / "in", tmp_path / "out"
    t = np.stack([blobs((64, 72), seed=s) for s in range(3)])
    write(src / "t.tif", t, pixel_size=0.1, axes="TYX")
    zc = np.stack([np.stack([blobs((56, 48), seed=10 + z), np.zeros((56, 48), np.uint16)]) for z in range(2)])
    write(src / "zc.tif", zc, axes="ZCYX")
    assert run_inprocess(SynSeg_Cytoskeleton, "-i", src, "-o", out, "-m", models["cytoskeleton"],
                         "--channel", "0", "--save-prob", "--overlay") == 0
    assert cv2.imread(str(out / "t_overlay.png")).shape == (64, 2 * 72 + 4, 3)
    mask, meta = tiffio.read_image(out / "t_mask.tif")
    assert mask.shape == (3, 64, 72) and meta["axes"] == "TYX" and meta["pixel_size_um"] == pytest.approx(0.1)
    assert tiffio.read_image(out / "t_prob.tif")[0].shape == (3, 64, 72)
    mask, meta = tiffio.read_image(out / "zc_mask.tif")
    assert mask.shape == (2, 56, 48) and meta["axes"] == "ZYX"
    rows = {os.path.basename(r["file"]): r for r in read_rows(out / "summary.csv")}
    assert rows["t.tif"]["shape"] == "3x64x72" and rows["t.tif"]["length_unit"] == "um"
    assert float(rows["t.tif"]["skeleton_length"]) > 0 and rows["zc.tif"]["length_unit"] == "px"


def test_bad_inputs_one_line_each_and_the_batch_goes_on(tmp_path, models):
    src, out = tmp_path / "in", tmp_path / "out"
    write(src / "good.tif", blobs((60, 60)))
    (src / "corrupt.tif").write_bytes(b"II*\x00 this is not really a TIFF")
    nan = smooth_noise((40, 40))
    nan[3, 4] = np.nan
    tifffile.imwrite(src / "nan.tif", nan)
    tifffile.imwrite(src / "rgb.tif", np.zeros((30, 40, 3), np.uint8) + 9, photometric="rgb")
    write(src / "const.tif", np.full((50, 60), 7, np.uint16))
    write(src / "tiny.tif", blobs((5, 7)))
    r = cli("SynSeg_Vesicle.py", "-i", src, "-o", out, "-m", models["vesicle"])
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    for name, words in [("corrupt.tif", "not a readable TIFF"), ("nan.tif", "NaN"),
                        ("rgb.tif", "3 channels (shape (30, 40, 3)")]:
        hits = [ln for ln in lines if name in ln and words in ln]
        assert len(hits) == 1, (name, r.stderr)
        assert not (out / name.replace(".tif", "_mask.tif")).exists()
    assert "3 failed" in r.stderr
    assert tiffio.read_image(out / "good_mask.tif")[0].shape == (60, 60)
    const = tiffio.read_image(out / "const_mask.tif")[0]
    assert const.shape == (50, 60) and not const.any()  # a constant image has nothing in it
    assert tiffio.read_image(out / "tiny_mask.tif")[0].shape == (5, 7)
    rows = {os.path.basename(r["file"]): r for r in read_rows(out / "summary.csv")}
    assert set(rows) == {"good.tif", "const.tif", "tiny.tif"} and rows["const.tif"]["count"] == "0"
    # with --channel the RGB file is fine
    assert run_inprocess(SynSeg_Vesicle, "-i", src / "rgb.tif", "-o", out, "-m", models["vesicle"],
                         "--channel", "1") == 0
    assert tiffio.read_image(out / "rgb_mask.tif")[0].shape == (30, 40)


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path, models, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    write(src / "a.tif", blobs((40, 48)))
    write(src / "b.tif", blobs((40, 48), seed=3))
    args = ["-i", src, "-o", out, "-m", models["vesicle"], "--object-csv"]
    assert run_inprocess(SynSeg_Vesicle, *args) == 0
    first = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    objects_before = read_rows(out / "objects.csv")
    (out / "b_mask.tif").unlink()  # as if the run had been interrupted before b
    capsys.readouterr()
    assert run_inprocess(SynSeg_Vesicle, *args) == 0
    err = capsys.readouterr().err
    assert "1 segmented, 1 skipped" in err
    assert (out / "a_mask.tif").stat().st_mtime_ns == first["a_mask.tif"]
    assert (out / "b_mask.tif").is_file()
    assert len(read_rows(out / "summary.csv")) == 2  # the skipped file keeps its row
    assert len(read_rows(out / "objects.csv")) == len(objects_before)
    assert run_inprocess(SynSeg_Vesicle, *args, "--overwrite") == 0
    assert "2 segmented, 0 skipped" in capsys.readouterr().err
    assert (out / "a_mask.tif").stat().st_mtime_ns != first["a_mask.tif"]


def test_original_flags_still_work(tmp_path, models):
    img = write(tmp_path / "f.tif", blobs((100, 90)), pixel_size=0.1)
    r = cli("SynSeg_Cytoskeleton.py", "--model_path", models["cytoskeleton"], "--input_path", img,
            "--output_path", tmp_path / "res" / "result.tif", "--threshold", "0.5", "--use_tiling",
            "--tile_size", "160", "--overlap", "96", "--resize_size", "48")
    assert r.returncode == 0, r.stderr
    assert "longer side is 48 px" in r.stderr
    mask, meta = tiffio.read_image(tmp_path / "res" / "result.tif")
    assert mask.shape == (100, 90) and meta["pixel_size_um"] == pytest.approx(0.1)
    row = read_rows(tmp_path / "res" / "summary.csv")[0]
    assert row["threshold"] == "0.5" and float(row["scale"]) == pytest.approx(0.48)
    assert int(row["junctions"]) >= 0 and float(row["skeleton_length"]) >= 0


def test_pixel_size_flag_and_no_rescale(tmp_path, models, capsys):
    img = write(tmp_path / "p.tif", blobs((64, 64)))
    assert run_inprocess(SynSeg_Vesicle, "-i", img, "-o", tmp_path / "o1", "-m", models["vesicle"],
                         "--pixel-size", "0.05", "--threshold", "otsu") == 0
    row = read_rows(tmp_path / "o1" / "summary.csv")[0]
    assert float(row["scale"]) == pytest.approx(0.5) and float(row["pixel_size_um"]) == pytest.approx(0.05)
    assert 0 < float(row["threshold"]) < 1  # Otsu's value is reported
    assert tiffio.read_image(tmp_path / "o1" / "p_mask.tif")[1]["pixel_size_um"] == pytest.approx(0.05)
    assert run_inprocess(SynSeg_Vesicle, "-i", img, "-o", tmp_path / "o2", "-m", models["vesicle"],
                         "--pixel-size", "0.05", "--no-rescale") == 0
    assert "no rescaling (--no-rescale)" in capsys.readouterr().err
    assert float(read_rows(tmp_path / "o2" / "summary.csv")[0]["scale"]) == 1.0


def test_never_overwrites_an_input(tmp_path, models):
    img = write(tmp_path / "a.tif", blobs((40, 40)))
    before = img.read_bytes()
    assert run_inprocess(SynSeg_Vesicle, "-i", img, "-o", img, "-m", models["vesicle"]) == 1
    assert img.read_bytes() == before
    # earlier outputs in the input folder (named in its summary.csv) are not taken for inputs
    src = tmp_path / "mixed"
    write(src / "cell.tif", blobs((40, 40)))
    assert run_inprocess(SynSeg_Vesicle, "-i", src, "-o", src, "-m", models["vesicle"], "--save-prob") == 0
    assert run_inprocess(SynSeg_Vesicle, "-i", src, "-o", src, "-m", models["vesicle"], "--overwrite") == 0
    assert not (src / "cell_mask_mask.tif").exists() and not (src / "cell_prob_mask.tif").exists()


def test_usage_errors_and_dry_run(tmp_path, models, capsys):
    img = write(tmp_path / "in" / "a.tif", blobs((40, 40)))
    missing = tmp_path / "nope.pth"
    assert run_inprocess(SynSeg_Vesicle, "-i", img, "-o", tmp_path / "o", "-m", missing) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "-m PATH" in err
    assert run_inprocess(SynSeg_Vesicle, "-i", tmp_path / "in", "-o", tmp_path / "o", "--pattern", "*.png",
                         "-m", models["vesicle"]) == 2
    assert "no input matches" in capsys.readouterr().err
    assert run_inprocess(SynSeg_Vesicle, "-i", img, "-o", tmp_path / "o", "-m", models["vesicle"],
                         "--tile-size", "32") == 2
    assert "must be larger than the overlap" in capsys.readouterr().err
    # a dry run needs no model and writes nothing
    assert run_inprocess(SynSeg_Vesicle, "-i", tmp_path / "in", "-o", tmp_path / "o", "-m", missing,
                         "--dry-run") == 0
    assert f"{img} -> {tmp_path / 'o' / 'a_mask.tif'} (new)" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()


def test_help_does_not_import_torch():
    code = ("import sys, SynSeg_Vesicle, SynSeg_Cytoskeleton; SynSeg_Vesicle.get_args_parser().format_help(); "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


def test_contrast_cut_is_logged_and_can_be_turned_off(tmp_path, models, monkeypatch, capsys):
    from synseg.segment import predict
    from synseg.segment import segment_vesicle as SynSeg_Vesicle
    from tests.test_spots import gaussian_spots, grid_centres

    centres = grid_centres(64, step=12)
    amps = [3000.0] * 32 + [150.0] * 32  # bright spots and faint specks in one image
    img = gaussian_spots((100, 100), centres, amps, background=500.0, noise=5.0, seed=4).astype(np.uint16)
    src = write(tmp_path / "in" / "s.tif", img)
    # a stand-in network that finds every spot, bright or faint: the cut alone must drop the faint ones
    monkeypatch.setattr(predict.Segmenter, "probability",
                        lambda self, plane, factor, progress, **_: (plane > 560).astype(np.float32))
    counts = {}
    for flag in ([], ["--no-contrast-cut"]):
        out = tmp_path / ("out" + "".join(flag))
        assert run_inprocess(SynSeg_Vesicle, "-i", src, "-o", out, "-m", models["vesicle"], "--object-csv",
                             "--no-split", *flag) == 0
        assert ("spot contrast cut: kept 32 of 64" in capsys.readouterr().err) == (not flag)
        objects = read_rows(out / "objects.csv")
        assert {"y", "x", "contrast", "snr", "integrated_intensity", "peak_probability"} <= set(objects[0])
        counts[bool(flag)] = len(objects)
    assert counts == {True: 64, False: 32}
