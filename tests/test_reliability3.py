"""Issue 30, reliability round three: one test per kind of failure, tried as a new user would.

Bad kinds: the same file spelled another way; the batch's own outputs taken as inputs; --workers without a
ceiling; an unreadable training file; training that diverges. Minor kinds: library chatter around our one
line; inputs passed over silently (broken links, a user's own NAME_mask.tif); tables whose rows of a file are
all gone; names that are not UTF-8; the generator's --overwrite of a folder that holds no dataset; messages
that do not name their file. Each case checks the exit code, one line naming the file, no traceback, and that
nothing of the user's was lost.
"""
import os
import pathlib

import numpy as np
import pytest
import tifffile
import torch

import evaluate
from synseg.generate import dataset
from synseg.generate import vesicle_generator as vg
from synseg.segment import segment_vesicle as SynSeg_Vesicle
from synseg.train import train_cytoskeleton as train_cytoskeleton_seg
from synseg.train import train_vesicle as train_vesicle_seg
from synseg import tiffio
import unet
from tests.test_batch_safety import blobs, command, one_line, rows, segment, snapshot, assert_kept, write
from tests.test_training import make_dataset, parse


def segmented(capsys, models, *args):
    """main(args) of SynSeg_Vesicle in-process with the tiny vesicle model: (exit code, stderr)."""
    return segment(SynSeg_Vesicle, capsys, *args, "-m", models["vesicle"])


# --------------------------------------------------------------------------- bad 1: one file, however spelled

def test_rerun_with_another_spelling_of_the_same_folders_skips_finished_files(tmp_path, models, capsys, monkeypatch):
    img = tmp_path / "gv" / "val" / "img"
    write(img / "a.tif", blobs((48, 48), seed=1))
    write(img / "b.tif", blobs((48, 48), seed=2))
    monkeypatch.chdir(tmp_path)
    code, err = segmented(capsys, models, "-i", "gv/val/img", "-o", "o_rr", "--object-csv")
    assert code == 0, err
    tables = snapshot(tmp_path / "o_rr")
    assert rows(tmp_path / "o_rr" / "summary.csv")[0]["file"] == str(img / "a.tif")  # absolute: any cwd reads it
    code, err = segmented(capsys, models, "-i", img, "-o", tmp_path / "o_rr", "--object-csv")
    assert code == 0 and "0 segmented, 2 skipped" in err, err
    monkeypatch.chdir(tmp_path / "gv")
    code, err = segmented(capsys, models, "-i", "val/img", "-o", "../o_rr", "--object-csv")
    assert code == 0 and "0 segmented, 2 skipped" in err, err
    os.symlink(tmp_path / "gv", tmp_path / "link")  # a symlinked spelling is the same file too
    code, err = segmented(capsys, models, "-i", tmp_path / "link" / "val" / "img", "-o", tmp_path / "o_rr",
                          "--object-csv")
    assert code == 0 and "0 segmented, 2 skipped" in err, err
    assert_kept(tables)


# --------------------------------------------------------------------------- bad 2: outputs never become inputs

def test_a_glob_rerun_into_the_input_folder_leaves_its_own_outputs_alone(tmp_path, models, capsys, monkeypatch):
    write(tmp_path / "iog" / "a.tif", blobs((48, 48), seed=1))
    monkeypatch.chdir(tmp_path)
    for n in range(2):
        code, err = segmented(capsys, models, "-i", "iog/*.tif", "-o", "iog", "--save-prob")
        assert code == 0 and "refusing" not in err, err
    assert sorted(p.name for p in (tmp_path / "iog").glob("*.tif")) == ["a.tif", "a_mask.tif", "a_prob.tif"]
    assert [r["file"] for r in rows(tmp_path / "iog" / "summary.csv")] == [str(tmp_path / "iog" / "a.tif")]


# --------------------------------------------------------------------------- bad 3: resource flags have a ceiling

def test_generator_workers_are_capped_by_images_and_cores(tmp_path, capsys, monkeypatch):
    assert dataset.worker_count(1000, 3) <= min(3, dataset.usable_cpus())
    assert dataset.worker_count(50, 3) <= 3 and dataset.worker_count(1, 3) == 1 and dataset.worker_count(4, 0) == 1
    started = []
    monkeypatch.setattr(dataset, "usable_cpus", lambda: 1)  # a one-core box: no pool at all
    real = dataset._write_one
    monkeypatch.setattr(dataset, "_write_one", lambda i: (started.append(os.getpid()), real(i))[1])
    args = vg.get_args_parser().parse_args(["--output-dir", str(tmp_path / "d"), "--num-images", "3",
                                            "--image-size", "32", "--workers", "1000", "--val-fraction", "0"])
    assert vg.main(args) == 0
    err = capsys.readouterr().err
    one_line(err, "--workers 1000", "1 worker")
    assert set(started) == {os.getpid()} and len(list((tmp_path / "d" / "train" / "img").glob("*.tif"))) == 3


# --------------------------------------------------------------------------- bad 4: an unreadable training file

@pytest.mark.parametrize("damage", [b"", b"\x93NUMPY\x01\x00v\x00{'descr': '|u1', 'fortran_order': False, 'sh"])
def test_unreadable_training_mask_is_one_line(tmp_path, capsys, damage):
    data = make_dataset(tmp_path / "data", n_train=3, n_val=1)
    (data / "train" / "mask" / "00001.npy").write_bytes(damage)
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    one_line(err, "00001.npy", "not a readable .npy mask")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- bad 5: divergence is an error

def test_diverging_training_exits_nonzero_and_ships_no_nan_model(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_train=2, n_val=1)
    out = tmp_path / "out"
    code = train_vesicle_seg.main(parse(train_vesicle_seg, data, out, "--lr", "1e9", "--epochs", "2"))
    err = capsys.readouterr().err
    assert code == 1, err
    one_line(err, "diverged", "--lr")
    best = out / "best_vesicle_model.pth"
    if best.exists():  # only a model whose weights are all finite is ever written as best
        model, _ = unet.load_model(best)
        assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


# --------------------------------------------------------------------------- minor: library chatter

def truncated(path, shape, keep=0.5):
    """An ImageJ TIFF cut short: tifffile logs 'ImageJ series metadata invalid' when it opens it."""
    write(path, blobs(shape), axes="TYX" if len(shape) == 3 else None)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize("shape, keep", [((64, 64), 0.5), ((3, 64, 64), 0.5), ((3, 64, 64), 0.99)])
def test_truncated_tiff_gives_our_line_only(tmp_path, models, shape, keep):
    """Subprocesses: pytest's log capture would hide the library's own lines in-process. A stack cut after its
    first frame reads as one plane; that is refused too, not segmented as a 2D image."""
    bad = truncated(tmp_path / "in" / "bad.tif", shape, keep)
    r = command("SynSeg_Vesicle.py", "-i", bad, "-o", tmp_path / "out", "-m", models["vesicle"])
    assert r.returncode == 1
    one_line(r.stderr, "bad.tif", "not a readable TIFF")
    assert "metadata invalid" not in r.stderr and "tifffile" not in r.stderr, r.stderr
    np.save(tmp_path / "gt.npy", np.zeros(shape, np.uint8))
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "gt_mask.tif").write_bytes(bad.read_bytes())
    r = command("evaluate.py", "--pred", tmp_path / "pred", "--gt", tmp_path, "-o", tmp_path / "rep")
    assert r.returncode == 1 and "metadata invalid" not in r.stderr, r.stderr
    one_line(r.stderr, "gt_mask.tif", "not a readable TIFF")


def test_training_error_comes_without_a_pixel_size_warning_first(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_train=2, n_val=1)
    (data / "generator.json").unlink()  # no pixel size known: that alone is a warning, not an error
    (data / "train" / "mask" / "00001.npy").unlink()
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [line for line in err.strip().splitlines() if line.startswith("error:")]
    one_line(err, "00001", "no mask")


def test_num_workers_above_the_cores_is_lowered_once(tmp_path, capsys, recwarn):
    data = make_dataset(tmp_path / "data", n_train=2, n_val=1)
    args = parse(train_vesicle_seg, data, tmp_path / "out")
    args.num_workers = 64
    assert train_vesicle_seg.main(args) == 0
    out = capsys.readouterr()
    assert "suggested max number of worker" not in out.err + "".join(str(w.message) for w in recwarn)
    one_line(out.out + out.err, "--num-workers 64")


# --------------------------------------------------------------------------- minor: nothing passed over silently

def test_broken_symlink_in_the_input_folder_is_reported(tmp_path, models, capsys):
    src = tmp_path / "in"
    write(src / "good.tif", blobs((48, 48)))
    os.symlink(tmp_path / "gone.tif", src / "link.tif")
    code, err = segmented(capsys, models, "-i", src, "-o", tmp_path / "out")
    assert code == 1
    one_line(err, "link.tif", "broken link", "gone.tif")
    assert (tmp_path / "out" / "good_mask.tif").is_file()


def test_users_own_x_mask_image_is_segmented_and_never_overwritten(tmp_path, models, capsys):
    src = tmp_path / "in"
    write(src / "x.tif", blobs((48, 48), seed=1))
    write(src / "x_mask.tif", blobs((48, 48), seed=2))  # the user's own image, not one of ours
    code, err = segmented(capsys, models, "-i", src, "-o", tmp_path / "out")
    assert code == 0 and "left out" not in err, err
    assert {r["file"] for r in rows(tmp_path / "out" / "summary.csv")} == {str(src / "x.tif"), str(src / "x_mask.tif")}
    mine = snapshot(src)
    code, err = segmented(capsys, models, "-i", src, "-o", src, "--overwrite")
    assert code == 1
    one_line(err, "x_mask.tif", "refusing to write", "input")
    assert_kept(mine)
    assert (src / "x_mask_mask.tif").is_file()
    code, err = segmented(capsys, models, "-i", src, "-o", src)  # again: x_mask_mask.tif is ours, never an input
    assert code == 1 and "x_mask_mask_mask" not in err and not (src / "x_mask_mask_mask.tif").exists(), err
    assert_kept(mine)


# --------------------------------------------------------------------------- minor: damaged tables are rebuilt

def two_segmented(tmp_path, models, capsys):
    src = tmp_path / "in"
    write(src / "a.tif", blobs((96, 96), seed=1))
    write(src / "b.tif", blobs((96, 96), seed=2))
    out = tmp_path / "out"
    assert segmented(capsys, models, "-i", src, "-o", out, "--object-csv")[0] == 0
    counts = {r["file"]: int(r["count"]) for r in rows(out / "summary.csv")}
    assert min(counts.values()) >= 2, counts
    return src, out


@pytest.mark.parametrize("loss", ["rows_of_one_file", "objects_table"])
def test_tables_that_lost_every_row_of_a_file_are_rebuilt(tmp_path, models, capsys, loss):
    src, out = two_segmented(tmp_path, models, capsys)
    tables = {name: (out / name).read_text() for name in ("summary.csv", "objects.csv")}
    if loss == "rows_of_one_file":
        lines = tables["objects.csv"].splitlines(keepends=True)
        (out / "objects.csv").write_text("".join(ln for ln in lines if str(src / "a.tif") not in ln))
    else:
        (out / "objects.csv").unlink()
    code, err = segmented(capsys, models, "-i", src, "-o", out, "--object-csv")
    assert code == 0, err
    assert "segmenting" in err and "again" in err, err
    assert {name: (out / name).read_text() for name in tables} == tables


# --------------------------------------------------------------------------- minor: names that are not UTF-8

def test_a_non_utf8_name_is_written_one_readable_way(tmp_path, models):
    src = tmp_path / "in"
    write(src / "good.tif", blobs((40, 40)))
    odd = pathlib.Path(os.fsdecode(os.fsencode(str(src)) + b"/x\xff.tif"))
    write(odd, blobs((40, 40), seed=3))
    out = tmp_path / "out"
    r = command("SynSeg_Vesicle.py", "-i", src, "-o", out, "-m", models["vesicle"])
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    table = (out / "summary.csv").read_bytes().decode("utf-8")  # a UTF-8 reader opens it
    assert "/x\\xff.tif" in table and table.count("\n") == 3
    named = [ln for ln in (r.stderr + r.stdout).splitlines() if "x\\" in ln]
    assert named and all("x\\xff" in ln and "\\udc" not in ln for ln in named), named
    again = command("SynSeg_Vesicle.py", "-i", src, "-o", out, "-m", models["vesicle"])
    assert again.returncode == 0 and "(unchanged)" in again.stderr, again.stderr
    assert (out / "summary.csv").read_bytes().decode("utf-8") == table


def test_tables_escape_undecodable_bytes(tmp_path):
    name = os.fsdecode(b"/data/x\xff.tif")
    tiffio.write_csv(tmp_path / "t.csv", [{"file": name, "count": 3}])
    assert (tmp_path / "t.csv").read_text(encoding="utf-8") == "file,count\n/data/x\\xff.tif,3\n"
    assert tiffio.shown(name) == "/data/x\\xff.tif" and tiffio.shown("/plain/é.tif") == "/plain/é.tif"


# --------------------------------------------------------------------------- minor: --overwrite only replaces a dataset

def test_generator_overwrite_of_a_folder_that_holds_no_dataset_keeps_it(tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "notes.txt").write_text("keep me")
    (folder / "preview.png").write_bytes(b"my picture")
    kept = snapshot(folder)
    args = vg.get_args_parser().parse_args(["--output-dir", str(folder), "--num-images", "1", "--image-size",
                                            "32", "--overwrite"])
    assert vg.main(args) == 2
    one_line(capsys.readouterr().err, str(folder), "generator.json", "--overwrite")
    assert_kept(kept)


# --------------------------------------------------------------------------- minor: messages name their file

def test_nan_probability_map_in_evaluate_names_the_file(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    mask = np.zeros((32, 32), np.uint8)
    mask[4:9, 4:9] = 255
    tiffio.write_tiff(tmp_path / "pred" / "a_mask.tif", mask)
    np.save(tmp_path / "a.npy", (mask > 0).astype(np.uint8))
    prob = np.full((32, 32), np.nan, np.float32)
    tifffile.imwrite(tmp_path / "pred" / "a_prob.tif", prob)
    code = evaluate.main(evaluate.get_args_parser().parse_args(["--pred", str(tmp_path / "pred"), "--gt",
                                                                 str(tmp_path), "--prob", "-o", str(tmp_path / "r")]))
    assert code == 1
    one_line(capsys.readouterr().err, "a_prob.tif", "NaN")


def test_export_refusal_names_the_checkpoint(tmp_path, models, capsys):
    pytest.importorskip("bioimageio.spec")
    from synseg import export

    ckpt = tmp_path / "median.pth"  # the original SynSeg vesicle normalisation: no bioimage.io equivalent
    model, info = unet.load_model(models["vesicle"])
    unet.save_checkpoint(ckpt, model, task="vesicle", normalization={"mode": "median", "target": 500.0},
                         pixel_size_um=0.1)
    args = export.get_args_parser().parse_args([str(ckpt), "-o", str(tmp_path / "m.zip")])
    assert export.main(args) != 0
    one_line(capsys.readouterr().err, "median.pth", "normalization 'median'")
    assert not (tmp_path / "m.zip").exists()


# --------------------------------------------------------------------------- help texts the README quotes

def test_help_states_defaults_and_the_tasks_own_model():
    from synseg.segment import batch

    tile = next(a for a in batch.get_args_parser("vesicle")._actions if a.dest == "tile_size")
    assert "default 0" in tile.help
    init = next(a for a in train_cytoskeleton_seg.get_args_parser()._actions if a.dest == "init_weights")
    assert "models/cytoskeleton.pth" in init.help and "vesicle" not in init.help
