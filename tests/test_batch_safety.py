"""Bad input and interrupted batches, tried as a new user would.

Every case checks four things: the exit code; one line on stderr that names the file (or flag) and the
problem; no traceback; and that nothing already written was lost or changed. Most cases call main(args)
in-process (quick); the kill -9 case and a few command-line ones run real subprocesses.
"""
import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import torch

from synseg.segment import batch
import evaluate
from synseg.segment import segment_cytoskeleton as SynSeg_Cytoskeleton
from synseg.segment import segment_vesicle as SynSeg_Vesicle
from synseg import tiffio
from synseg.train import train_vesicle as train_vesicle_seg
import unet
from tests.conftest import ROOT
from tests.test_predict import smooth_noise
from tests.test_training import make_dataset, parse


# --------------------------------------------------------------------------- fixtures and helpers

def blobs(shape, seed=0, dtype=np.uint16, scale=3000.0):
    """A bright-spot image."""
    return (np.clip(smooth_noise(shape, seed=seed, sigma=1.5), 0, None) * scale + 100).astype(dtype)


def write(path, data, pixel_size=None, axes=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    tiffio.write_tiff(path, data, pixel_size_um=pixel_size, axes=axes)
    return path


def snapshot(*folders):
    """{path: bytes} of every file under the folders (what must survive a failed or refused run)."""
    return {p: p.read_bytes() for f in folders if f.exists() for p in sorted(f.rglob("*")) if p.is_file()}


def assert_kept(snap):
    """Every file of the snapshot is still there, byte for byte."""
    for path, data in snap.items():
        assert path.is_file(), f"{path} was removed"
        assert path.read_bytes() == data, f"{path} was changed"


def one_line(err, *words):
    """The single stderr line holding every word; and no traceback anywhere."""
    assert "Traceback" not in err, err
    hits = [ln for ln in err.splitlines() if all(str(w) in ln for w in words)]
    assert len(hits) == 1, (words, err)
    return hits[0]


def segment(module, capsys, *args):
    """main(args) in-process: (exit code, stderr)."""
    capsys.readouterr()
    code = module.main(module.get_args_parser().parse_args([str(a) for a in args]))
    return code, capsys.readouterr().err


def command(script, *args, timeout=300):
    """The real command line in a subprocess."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def folder_with_one_good(tmp_path):
    """in/good.tif and an output folder; returns (input folder, output folder)."""
    src = tmp_path / "in"
    write(src / "good.tif", blobs((48, 56)))
    return src, tmp_path / "out"


# --------------------------------------------------------------------------- bad images: one line, the batch goes on

@pytest.mark.parametrize("kind", ["truncated", "random_bytes"])
def test_broken_tiff_fails_alone(tmp_path, models, capsys, kind):
    src, out = folder_with_one_good(tmp_path)
    good = (src / "good.tif").read_bytes()
    data = good[: len(good) // 2] if kind == "truncated" else np.random.default_rng(0).bytes(3000)
    (src / "bad.tif").write_bytes(data)
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src, "-o", out, "-m", models["vesicle"])
    assert code == 1
    one_line(err, "bad.tif", "not a readable TIFF")
    assert not (out / "bad_mask.tif").exists() and (out / "good_mask.tif").is_file()
    assert [r["file"] for r in rows(out / "summary.csv")] == [str(src / "good.tif")]


def test_rgb_without_channel(tmp_path, models, capsys):
    src, out = folder_with_one_good(tmp_path)
    tifffile.imwrite(src / "rgb.tif", np.zeros((30, 40, 3), np.uint8) + 9, photometric="rgb")
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src, "-o", out, "-m", models["vesicle"])
    assert code == 1
    one_line(err, "rgb.tif", "3 channels", "--channel")
    assert (out / "good_mask.tif").is_file()


def test_nan_pixels(tmp_path, models, capsys):
    src, out = folder_with_one_good(tmp_path)
    nan = smooth_noise((40, 40))
    nan[3, 4] = np.nan
    tifffile.imwrite(src / "nan.tif", nan)
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src, "-o", out, "-m", models["vesicle"])
    assert code == 1
    one_line(err, "nan.tif", "NaN")
    assert not (out / "nan_mask.tif").exists()


def test_constant_image_gives_an_empty_mask(tmp_path, models, capsys):
    img = write(tmp_path / "const.tif", np.full((50, 60), 7, np.uint16))
    code, err = segment(SynSeg_Vesicle, capsys, "-i", img, "-o", tmp_path / "out", "-m", models["vesicle"])
    assert code == 0
    one_line(err, "const.tif", "constant image")
    assert not tiffio.read_image(tmp_path / "out" / "const_mask.tif")[0].any()


def test_tiny_image(tmp_path, models, capsys):
    img = write(tmp_path / "tiny.tif", blobs((5, 7)))
    code, err = segment(SynSeg_Vesicle, capsys, "-i", img, "-o", tmp_path / "out", "-m", models["vesicle"])
    assert code == 0 and "Traceback" not in err
    assert tiffio.read_image(tmp_path / "out" / "tiny_mask.tif")[0].shape == (5, 7)


def test_empty_folder(tmp_path, models, capsys):
    (tmp_path / "empty").mkdir()
    code, err = segment(SynSeg_Vesicle, capsys, "-i", tmp_path / "empty", "-o", tmp_path / "out",
                        "-m", models["vesicle"])
    assert code == 2
    one_line(err, "empty", "no input matches")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value,words", [("1.5", "outside (0, 1)"), ("high", "use a number between 0 and 1")])
def test_bad_threshold(tmp_path, models, value, words):
    img = write(tmp_path / "a.tif", blobs((32, 32)))
    r = command("SynSeg_Vesicle.py", "-i", img, "-o", tmp_path / "out", "-m", models["vesicle"], "--threshold", value)
    assert r.returncode == 2
    one_line(r.stderr, "--threshold", words)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tile,words", [("8", "too small"), ("32", "must be larger than the overlap")])
def test_bad_tile_size(tmp_path, models, capsys, tile, words):
    img = write(tmp_path / "a.tif", blobs((32, 32)))
    code, err = segment(SynSeg_Vesicle, capsys, "-i", img, "-o", tmp_path / "out", "-m", models["vesicle"],
                        "--tile-size", tile)
    assert code == 2
    one_line(err, "--tile-size", words)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- checkpoints

def test_pickled_checkpoint_is_refused(tmp_path, capsys):
    img = write(tmp_path / "a.tif", blobs((32, 32)))
    path = tmp_path / "object.pth"
    torch.save(torch.nn.Linear(2, 2), path)  # a whole module: Python objects, not only weights
    code, err = segment(SynSeg_Vesicle, capsys, "-i", img, "-o", tmp_path / "out", "-m", path)
    assert code == 2
    one_line(err, "object.pth", "holds Python objects")


def test_random_bytes_checkpoint_is_not_a_checkpoint(tmp_path, capsys):
    img = write(tmp_path / "a.tif", blobs((32, 32)))
    path = tmp_path / "noise.pth"
    path.write_bytes(b"\x13" + np.random.default_rng(1).bytes(4000))
    code, err = segment(SynSeg_Vesicle, capsys, "-i", img, "-o", tmp_path / "out", "-m", path)
    assert code == 2
    line = one_line(err, "noise.pth", "not a PyTorch checkpoint")
    assert "Python objects" not in line


def test_missing_model_names_the_path_given(tmp_path, capsys):
    img = write(tmp_path / "a.tif", blobs((32, 32)))
    code, err = segment(SynSeg_Vesicle, capsys, "-i", img, "-o", tmp_path / "out", "-m", tmp_path / "typo.pth")
    assert code == 2
    line = one_line(err, str(tmp_path / "typo.pth"), "not found")
    assert "shipped" not in line


def test_model_of_the_other_task_is_refused_unless_asked(tmp_path, models, capsys):
    img = write(tmp_path / "a.tif", blobs((32, 32)))
    code, err = segment(SynSeg_Cytoskeleton, capsys, "-i", img, "-o", tmp_path / "out", "-m", models["vesicle"])
    assert code == 2
    one_line(err, str(models["vesicle"]), "is a vesicle model", "SynSeg_Vesicle.py", "--any-task")
    assert not (tmp_path / "out").exists()
    code, err = segment(SynSeg_Cytoskeleton, capsys, "-i", img, "-o", tmp_path / "out", "-m", models["vesicle"],
                        "--any-task")
    assert code == 0
    one_line(err, "warning", "trained for 'vesicle'")


# --------------------------------------------------------------------------- pixel sizes

@pytest.mark.parametrize("size", ["100", "6.5"])
def test_implausible_pixel_size_flag(tmp_path, models, capsys, size):
    img = write(tmp_path / "a.tif", blobs((64, 64)))
    code, err = segment(SynSeg_Vesicle, capsys, "-i", img, "-o", tmp_path / "out", "-m", models["vesicle"],
                        "--pixel-size", size)
    assert code == 2
    one_line(err, f"--pixel-size {size} um/px", "the model's 0.1 um/px", "--no-rescale")
    assert not (tmp_path / "out").exists()


def test_implausible_pixel_size_in_the_tags_fails_that_file(tmp_path, models, capsys):
    src, out = folder_with_one_good(tmp_path)
    write(src / "huge_px.tif", blobs((64, 64)), pixel_size=100.0)  # tags: 100 um/px, 1000x the model's
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src, "-o", out, "-m", models["vesicle"])
    assert code == 1
    one_line(err, "huge_px.tif", "pixel size 100 um/px (from the file's tags)", "0.1 um/px", "--pixel-size")
    assert [r["file"] for r in rows(out / "summary.csv")] == [str(src / "good.tif")]  # the batch went on


def test_resized_plane_too_large(tmp_path, models, capsys):
    img = write(tmp_path / "wide.tif", blobs((16, 20)))
    code, err = segment(SynSeg_Vesicle, capsys, "-i", img, "-o", tmp_path / "out", "-m", models["vesicle"],
                        "--resize_size", "40000")
    assert code == 1
    one_line(err, "wide.tif", "would be 32000x40000 px")


# --------------------------------------------------------------------------- outputs

def test_interrupted_batch_kill9_then_rerun_gives_the_tables_of_an_uninterrupted_run(tmp_path, models):
    src = tmp_path / "in"
    for k in range(24):
        write(src / f"img{k:02d}.tif", blobs((320, 320), seed=k))
    flags = ["-m", models["vesicle"], "--object-csv", "--tile-size", "96", "--threads", "1"]
    reference = command("SynSeg_Vesicle.py", "-i", src, "-o", tmp_path / "ref", *flags)
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "SynSeg_Vesicle.py"), "-i", str(src), "-o", str(out),
                             *map(str, flags)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            cwd=ROOT)
    deadline = time.time() + 240
    while len(list(out.glob("*_mask.tif"))) < 10 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(out.glob("*_mask.tif"))
    assert 10 <= len(done) < 24, "the kill must land mid-batch"
    for mask in done:  # whatever the moment, a mask under its final name is complete
        assert tiffio.read_image(mask)[0].shape == (320, 320)
    for table in ("summary.csv", "objects.csv"):  # and a table is either absent or whole
        assert not (out / table).exists() or rows(out / table)
    before = snapshot(out)

    rerun = command("SynSeg_Vesicle.py", "-i", src, "-o", out, *flags)
    assert rerun.returncode == 0, rerun.stderr
    assert "Traceback" not in rerun.stderr
    one_line(rerun.stderr, f"{24 - len(done)} segmented, {len(done)} skipped")
    assert_kept({p: b for p, b in before.items() if p.name.endswith("_mask.tif")})  # nothing redone
    for table in ("summary.csv", "objects.csv"):
        expected = (tmp_path / "ref" / table).read_text().replace(str(tmp_path / "ref"), str(out))
        assert (out / table).read_text() == expected, table
    assert len(rows(out / "summary.csv")) == 24
    assert not (out / batch.RECORDS).exists()  # the per-file records are folded into the tables


def _default_sigint():
    """In the child: SIGINT back to its default. A test run started in the background (CI under `&` or nohup)
    inherits SIGINT ignored, and Python then never turns Ctrl-C into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_writes_the_tables_of_the_files_done(tmp_path, models):
    src = tmp_path / "in"
    for k in range(10):
        write(src / f"img{k:02d}.tif", blobs((320, 320), seed=k))
    flags = ["-m", models["vesicle"], "--object-csv", "--tile-size", "96", "--threads", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # On a fast machine the batch can finish before the interrupt lands; such an attempt shows nothing
    # about Ctrl-C, so it is repeated, up to 3 times.
    for attempt in range(3):
        out = tmp_path / f"out{attempt}"
        proc = subprocess.Popen([sys.executable, str(ROOT / "SynSeg_Vesicle.py"), "-i", str(src), "-o", str(out),
                                 *map(str, flags)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=env, cwd=ROOT, preexec_fn=_default_sigint)
        deadline = time.time() + 240
        while len(list(out.glob("*_mask.tif"))) < 3 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
        if not (proc.returncode == 0 and len(list(out.glob("*_mask.tif"))) == 10):
            break
    assert proc.returncode == 130, err
    one_line(err, "interrupted", "writing the tables")
    done = sorted(out.glob("*_mask.tif"))
    assert 3 <= len(done) < 10
    assert len(rows(out / "summary.csv")) == len(done)  # the finished files are in the table at once
    rerun = command("SynSeg_Vesicle.py", "-i", src, "-o", out, *flags)
    assert rerun.returncode == 0 and "Traceback" not in rerun.stderr
    assert [r["file"] for r in rows(out / "summary.csv")] == [str(p) for p in sorted(src.glob("*.tif"))]


def test_kill_between_record_and_mask_redoes_the_file(tmp_path, models, capsys):
    """A record without its mask (killed just before the mask) is not taken for a finished file."""
    src, out = folder_with_one_good(tmp_path)
    assert segment(SynSeg_Vesicle, capsys, "-i", src, "-o", out, "-m", models["vesicle"])[0] == 0
    table = (out / "summary.csv").read_text()
    (out / "good_mask.tif").unlink()
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src, "-o", out, "-m", models["vesicle"])
    assert code == 0 and "1 segmented, 0 skipped," in err and "(mask exists" not in err
    assert (out / "summary.csv").read_text() == table


def test_mask_without_recorded_rows_is_reported_not_skipped(tmp_path, models, capsys):
    src, out = folder_with_one_good(tmp_path)
    write(src / "other.tif", blobs((40, 40), seed=5))
    write(out / "other_mask.tif", np.zeros((40, 40), np.uint8))  # from an older version or another tool
    before = snapshot(out)
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src, "-o", out, "-m", models["vesicle"])
    assert code == 1
    one_line(err, "other_mask.tif", "exists, but its measurements are in no summary.csv", "--overwrite")
    assert_kept(before)


def test_cytoskeleton_into_vesicle_results_is_refused(tmp_path, models, capsys):
    src, out = folder_with_one_good(tmp_path)
    assert segment(SynSeg_Vesicle, capsys, "-i", src, "-o", out, "-m", models["vesicle"])[0] == 0
    before = snapshot(out)
    for extra in ([], ["--overwrite"]):
        code, err = segment(SynSeg_Cytoskeleton, capsys, "-i", src, "-o", out, "-m", models["cytoskeleton"], *extra)
        assert code == 2
        one_line(err, str(out / "summary.csv"), "holds vesicle results", "choose another -o")
        assert "skipped" not in err
        assert_kept(before)


def test_foreign_summary_is_refused_before_any_work(tmp_path, models, capsys):
    src, out = folder_with_one_good(tmp_path)
    out.mkdir()
    (out / "summary.csv").write_text("name,value\nx,1\n")
    before = snapshot(out)
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src, "-o", out, "-m", models["vesicle"])
    assert code == 2
    one_line(err, str(out / "summary.csv"), "columns this script does not write")
    assert not (out / "good_mask.tif").exists()
    assert_kept(before)


def test_output_that_is_a_file(tmp_path, models, capsys):
    src, _ = folder_with_one_good(tmp_path)
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src, "-o", target, "-m", models["vesicle"])
    assert code == 2
    one_line(err, str(target), "is a file")
    assert target.read_text() == "keep me"


def test_output_folder_that_cannot_be_written(tmp_path, models, capsys):
    src, _ = folder_with_one_good(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder would go")
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src, "-o", blocker / "out", "-m", models["vesicle"])
    assert code == 2
    one_line(err, str(blocker / "out"), "cannot write there")
    assert blocker.read_text() == "a file where a folder would go"


def test_never_writes_onto_an_input(tmp_path, models, capsys):
    img = write(tmp_path / "a.tif", blobs((40, 40)))
    before = snapshot(tmp_path)
    code, err = segment(SynSeg_Vesicle, capsys, "-i", img, "-o", img, "-m", models["vesicle"])
    assert code == 1
    one_line(err, "a.tif", "it is an input file")
    assert_kept(before)


def test_final_line_says_only_what_happened(tmp_path, models, capsys):
    src = tmp_path / "in"
    (src).mkdir()
    (src / "bad.tif").write_bytes(b"II*\x00 not really a TIFF")
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src, "-o", tmp_path / "out", "-m", models["vesicle"])
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert "0 segmented, 0 skipped, 1 failed" in last and "(mask exists" not in last
    assert "no summary written" in last and not (tmp_path / "out" / "summary.csv").exists()
    write(src / "bad.tif", blobs((40, 40)))
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src, "-o", tmp_path / "out", "-m", models["vesicle"])
    assert code == 0 and f"summary: {tmp_path / 'out' / 'summary.csv'}" in err.strip().splitlines()[-1]
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src, "-o", tmp_path / "out", "-m", models["vesicle"])
    assert code == 0 and "1 skipped (mask exists; --overwrite to redo)" in err and "(unchanged)" in err


def test_partial_and_hidden_files_are_not_inputs(tmp_path, models, capsys):
    src, out = folder_with_one_good(tmp_path)
    (src / ".good_mask.part123.tif").write_bytes(b"half a file")  # left by a kill during a write
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src, "-o", src, "-m", models["vesicle"])
    assert code == 0 and ".part123" not in err
    assert [r["file"] for r in rows(src / "summary.csv")] == [str(src / "good.tif")]


def test_overlay_style_is_the_one_the_help_names(tmp_path, models, capsys):
    for module, task, word in ((SynSeg_Vesicle, "vesicle", "outlined"), (SynSeg_Cytoskeleton, "cytoskeleton",
                                                                          "tinted")):
        assert word in " ".join(module.get_args_parser().format_help().split())
        img = write(tmp_path / task / "a.tif", blobs((40, 40)))
        assert segment(module, capsys, "-i", img, "-o", tmp_path / task / "out", "-m", models[task],
                       "--overlay", "--threshold", "0.3")[0] == 0
        png = tiffio.read_image(tmp_path / task / "out" / "a_overlay.png")[0]
        right = png[:, 44:]
        mask = tiffio.read_image(tmp_path / task / "out" / "a_mask.tif")[0] > 0
        coloured = right.max(axis=-1) != right.min(axis=-1)  # grey pixels have three equal channels
        if word == "outlined":  # the ring lies outside the objects, the objects keep their grey
            assert coloured.any() and not (coloured & mask).any()
        else:  # the objects themselves are tinted
            assert mask.any() and np.array_equal(coloured, mask)


# --------------------------------------------------------------------------- training and evaluation

def test_mismatched_training_masks(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_train=2)
    np.save(data / "train" / "mask" / "00001.npy", np.zeros((31, 32), np.uint8))
    capsys.readouterr()
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, tmp_path / "out")) == 2
    one_line(capsys.readouterr().err, "00001.tif", "(32, 32)", "(31, 32)")
    assert not (tmp_path / "out").exists()


def test_training_refuses_to_replace_an_earlier_run(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_train=2)
    out = tmp_path / "out"
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, out)) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, out)) == 2
    one_line(capsys.readouterr().err, str(out), "holds an earlier run", "best_vesicle_model.pth", "--resume",
             "--overwrite")
    assert_kept(before)
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, out, "--epochs", "2", "--resume")) == 0
    assert unet.load_model(out / "last.pth")[1]["epoch"] == 2
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, out, "--overwrite")) == 0
    assert unet.load_model(out / "last.pth")[1]["epoch"] == 1


def test_evaluate_output_that_is_a_file(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    np.save(tmp_path / "pred" / "a.npy", np.ones((8, 8), np.uint8))
    np.save(tmp_path / "gt" / "a.npy", np.ones((8, 8), np.uint8))
    report = tmp_path / "report"
    report.write_text("an earlier report")
    args = evaluate.get_args_parser().parse_args(["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                                                  "-o", str(report)])
    capsys.readouterr()
    assert evaluate.main(args) == 2
    one_line(capsys.readouterr().err, str(report), "is a file")
    assert report.read_text() == "an earlier report"


def test_evaluate_grid_mentions_points_only_where_there_are_points(tmp_path, monkeypatch):
    import matplotlib.axes

    titles = []
    real = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", lambda self, t, *a, **k: (titles.append(t),
                                                                                      real(self, t, *a, **k))[1])
    pred = np.zeros((16, 16), np.uint8)
    evaluate.write_grid(tmp_path / "g.png", [("a", None, pred, None, pred),
                                             ("b", None, pred, np.array([[3.0, 4.0]]), pred)])
    assert titles[1] == "ground truth" and titles[5] == "ground truth (points: cyan rings)"


def test_generator_warns_when_no_validation_image_is_left(tmp_path):
    r = command("Vesicle_generator.py", "--num-images", "2", "--output-dir", tmp_path / "data",
                "--image-size", "64", "--workers", "1")
    assert r.returncode == 0, r.stderr
    one_line(r.stderr, "--num-images 2", "no validation image", "--val-fraction")


def test_generator_killed_and_resumed_writes_the_same_files(tmp_path):
    flags = ["--num-images", "24", "--image-size", "128", "--workers", "1", "--seed", "3"]
    straight = command("Vesicle_generator.py", "--output-dir", tmp_path / "straight", *flags)
    assert straight.returncode == 0, straight.stderr
    out = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "Vesicle_generator.py"), "--output-dir", str(out),
                             *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    deadline = time.time() + 120
    while len(list(out.glob("*/img/*.tif"))) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= len(list(out.glob("*/img/*.tif"))) < 24, "the kill must land mid-run"
    again = command("Vesicle_generator.py", "--output-dir", out, *flags)
    assert again.returncode == 2
    one_line(again.stderr, str(out), "--resume")
    resumed = command("Vesicle_generator.py", "--output-dir", out, *flags, "--resume")
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr
    expected = {p.relative_to(tmp_path / "straight"): b for p, b in snapshot(tmp_path / "straight").items()}
    got = {p.relative_to(out): b for p, b in snapshot(out).items()}
    assert got.keys() == expected.keys()
    assert all(got[k] == expected[k] for k in expected if k.suffix != ".json")  # generator.json: same settings
