"""Reliability, round two (issue 23): write errors, damaged tables, decompression bombs, name clashes, odd names.

Each case checks what test_batch_safety.py checks: the exit code, one line naming the path (or flag) and the
problem, no traceback, nothing already written lost. Read-only folders and full disks are simulated in-process
(monkeypatched writes raising EROFS / ENOSPC / a short write): the tests run as root in CI, where chmod does
not stop a write, and a real full disk needs a mount.
"""
import errno
import os
import pathlib
import shutil

import numpy as np
import pytest
import tifffile
import torch

from synseg.segment import batch
from synseg.generate import dataset
import evaluate
from synseg import export as export_model
from synseg.segment import segment_vesicle as SynSeg_Vesicle
from synseg import tiffio
from synseg.train import train_vesicle as train_vesicle_seg
import unet
from synseg.generate import vesicle_generator as Vesicle_generator
from tests.test_batch_safety import assert_kept, blobs, command, one_line, rows, segment, snapshot, write
from tests.test_training import make_dataset, parse


def generator_args(out, *extra):
    return Vesicle_generator.get_args_parser().parse_args(
        ["--output-dir", str(out), "--num-images", "4", "--image-size", "48", "--workers", "1", *map(str, extra)])


def generate(out, *extra) -> int:
    return dataset.generate(generator_args(out, *extra), batch_kind_vesicles(), kind="vesicle", bit_depth=16)


def batch_kind_vesicles():
    from synseg.generate import vesicles

    return vesicles.Vesicles


def read_only(monkeypatch, folder):
    """Writes under `folder` fail with EROFS (as on a read-only mount; chmod does not stop root)."""
    folder = str(folder)

    def refuse(path):
        if str(path).startswith(folder):
            raise OSError(errno.EROFS, "Read-only file system", str(path))

    real_mkdir, real_open, real_write = pathlib.Path.mkdir, os.open, pathlib.Path.write_bytes
    monkeypatch.setattr(pathlib.Path, "mkdir", lambda self, *a, **k: (refuse(self), real_mkdir(self, *a, **k))[1])
    monkeypatch.setattr(pathlib.Path, "write_bytes", lambda self, d: (refuse(self), real_write(self, d))[1])
    monkeypatch.setattr(os, "open", lambda p, *a, **k: (refuse(p), real_open(p, *a, **k))[1])


# --------------------------------------------------------------------------- bad 1: a name that is not UTF-8

def test_non_utf8_file_name_is_segmented_and_tabled(tmp_path, models):
    src = tmp_path / "in"
    write(src / "good.tif", blobs((40, 40)))
    odd = pathlib.Path(os.fsdecode(os.fsencode(str(src)) + b"/x\xff.tif"))
    write(odd, blobs((40, 40), seed=3))
    out = tmp_path / "out"
    r = command("SynSeg_Vesicle.py", "-i", src, "-o", out, "-m", models["vesicle"])
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert os.path.exists(os.fsencode(str(out)) + b"/x\xff_mask.tif")
    table = (out / "summary.csv").read_bytes()
    assert b"/x\\xff.tif" in table and table.count(b"\n") == 3  # the odd byte as the text \xff, one row per file
    again = command("SynSeg_Vesicle.py", "-i", src, "-o", out, "-m", models["vesicle"])
    assert again.returncode == 0 and "(unchanged)" in again.stderr, again.stderr
    assert (out / "summary.csv").read_bytes() == table


def test_csv_writes_a_non_utf8_name_as_readable_text(tmp_path):
    name = os.fsdecode(b"/data/x\xff.tif")
    tiffio.write_csv(tmp_path / "t.csv", [{"file": name, "count": 3}])
    assert tiffio.read_csv(tmp_path / "t.csv") == [{"file": tiffio.shown(name), "count": "3"}]


# --------------------------------------------------------------------------- bad 2, 3: damaged tables

def two_segmented(tmp_path, models, capsys, *extra):
    src = tmp_path / "in"
    write(src / "a.tif", blobs((96, 96), seed=1))
    write(src / "b.tif", blobs((96, 96), seed=2))
    out = tmp_path / "out"
    assert segment(SynSeg_Vesicle, capsys, "-i", src, "-o", out, "-m", models["vesicle"], *extra)[0] == 0
    return src, out


def test_summary_cut_mid_row_is_rebuilt_not_kept(tmp_path, models, capsys):
    src, out = two_segmented(tmp_path, models, capsys)
    table = (out / "summary.csv").read_text()
    assert len(rows(out / "summary.csv")) == 2
    cut = table[: table.rindex(",", 0, len(table) - 30)]  # the last row cut mid-row
    (out / "summary.csv").write_text(cut + "\n")
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src, "-o", out, "-m", models["vesicle"])
    assert code == 0
    one_line(err, "summary.csv", "b.tif", "is damaged", "segmenting b.tif again")
    assert "1 segmented, 1 skipped" in err
    assert (out / "summary.csv").read_text() == table


def test_objects_cut_mid_file_is_rebuilt(tmp_path, models, capsys):
    src, out = two_segmented(tmp_path, models, capsys, "--object-csv")
    objects = (out / "objects.csv").read_text()
    counts = {r["file"]: int(r["count"]) for r in rows(out / "summary.csv")}
    assert min(counts.values()) >= 2, counts
    (out / "objects.csv").write_text(objects[: len(objects) - 40])  # the last rows lost, the last one half
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src, "-o", out, "-m", models["vesicle"], "--object-csv")
    assert code == 0, err
    one_line(err, "objects.csv", "b.tif", "is damaged")
    assert (out / "objects.csv").read_text() == objects


def test_damaged_row_of_a_file_outside_the_batch_is_refused(tmp_path, models, capsys):
    src, out = two_segmented(tmp_path, models, capsys)
    table = (out / "summary.csv").read_text()
    lines = table.splitlines()
    (out / "summary.csv").write_text("\n".join([lines[0], lines[1][:40], lines[2]]) + "\n")
    before = snapshot(out)
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src / "b.tif", "-o", out, "-m", models["vesicle"])
    assert code == 2
    one_line(err, "summary.csv", "row 1", "is damaged", "not an input of this run")
    assert_kept(before)


# --------------------------------------------------------------------------- bad 4: decompression bomb, long runs

def bomb(path, side=100000):
    """A 400-byte tiled zlib TIFF whose header declares side x side uint16."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.zeros((256, 256), np.uint16), tile=(256, 256), compression="zlib", metadata=None)
    with tifffile.TiffFile(path, mode="r+") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(side)
        tif.pages[0].tags["ImageLength"].overwrite(side)
    return path


def test_bomb_is_refused_from_its_header(tmp_path):
    path = bomb(tmp_path / "bomb.tif")
    assert path.stat().st_size < 4096
    with pytest.raises(tiffio.SizeError, match=r"declares 100000x100000 uint16 .* over the limit .* --max-pixels"):
        tiffio.read_image(path)


def test_bomb_in_a_batch_fails_alone_before_reading(tmp_path, models, capsys):
    src = tmp_path / "in"
    write(src / "good.tif", blobs((40, 40)))
    bomb(src / "bomb.tif")
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src, "-o", tmp_path / "out", "-m", models["vesicle"])
    assert code == 1
    one_line(err, "bomb.tif", "declares 100000x100000 uint16", "20 GB", "--max-pixels")
    assert [r["file"] for r in rows(tmp_path / "out" / "summary.csv")] == [str(src / "good.tif")]
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src / "good.tif", "-o", tmp_path / "o2", "-m",
                        models["vesicle"], "--max-pixels", "100")
    assert code == 1
    one_line(err, "good.tif", "declares 40x40", "over the limit")


def test_long_run_states_its_predicted_time_first(tmp_path, models, capsys, monkeypatch):
    monkeypatch.setattr(batch, "LONG_RUN_PIXELS", 1000)
    img = write(tmp_path / "a.tif", blobs((40, 40)))
    code, err = segment(SynSeg_Vesicle, capsys, "-i", img, "-o", tmp_path / "out", "-m", models["vesicle"])
    assert code == 0
    line = one_line(err, "1 file(s) of", "predicted time about")
    assert err.index(line) < err.index("a.tif: 1 plane(s)")


# --------------------------------------------------------------------------- bad 5: output name clashes

def test_inputs_writing_the_same_mask_are_refused_before_any_work(tmp_path, models, capsys):
    src = tmp_path / "in"
    for name in ("a.tif", "a.tiff", "a.ome.tif"):
        write(src / name, blobs((32, 32)))
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src, "-o", tmp_path / "out", "-m", models["vesicle"],
                        "--overwrite")
    assert code == 2
    one_line(err, "a.ome.tif", "a.tif and", "a.tiff", "would all write", "a_mask.tif")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- bad 6, 8, 12: generator

def test_generator_into_a_read_only_folder(tmp_path, monkeypatch, capsys):
    read_only(monkeypatch, tmp_path / "ro")
    assert generate(tmp_path / "ro" / "data") == 2
    one_line(capsys.readouterr().err, str(tmp_path / "ro" / "data"), "cannot write (read-only file system)")


def test_generator_onto_a_full_disk(tmp_path, monkeypatch, capsys):
    out = tmp_path / "data"
    real_save, calls = np.save, []

    def short_write(fh, array, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            fh.write(b"\x93NUMPY half")
            raise OSError("65536 requested and 46936 written")
        return real_save(fh, array, *a, **k)

    monkeypatch.setattr(dataset.np, "save", short_write)
    assert generate(out) == 1
    line = one_line(capsys.readouterr().err, "00002.npy", "cannot write (disk full: 46936 of 65536 bytes written)",
                    "--resume")
    assert "requested" not in line.split("(disk full")[0]
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no partial file left
    assert len(list(out.glob("*/img/*.tif"))) == 2  # the two images before are whole


def test_generator_image_size_is_bounded(tmp_path, capsys):
    assert generate(tmp_path / "d", "--image-size", "100000") == 2
    one_line(capsys.readouterr().err, "--image-size", "100000", "[8, 8192]")
    assert not (tmp_path / "d").exists()


# --------------------------------------------------------------------------- bad 10, 11 and every numeric flag

@pytest.mark.parametrize("parser,argv,flag", [
    (lambda: SynSeg_Vesicle.get_args_parser(), ["-i", "x", "-o", "y", "--threads", "-2"], "--threads"),
    (lambda: SynSeg_Vesicle.get_args_parser(), ["-i", "x", "-o", "y", "--pixel-size", "inf"], "--pixel-size"),
    (lambda: SynSeg_Vesicle.get_args_parser(), ["-i", "x", "-o", "y", "--max-pixels", "0"], "--max-pixels"),
    (lambda: Vesicle_generator.get_args_parser(), ["--output-dir", "d", "--snr", "nan", "nan"], "--snr"),
    (lambda: Vesicle_generator.get_args_parser(), ["--output-dir", "d", "--snr", "1", "inf"], "--snr"),
    (lambda: Vesicle_generator.get_args_parser(), ["--output-dir", "d", "--pixel-size", "nan"], "--pixel-size"),
    (lambda: train_vesicle_seg.get_args_parser(), ["--lr", "nan"], "--lr"),
    (lambda: train_vesicle_seg.get_args_parser(), ["--epochs", "-1"], "--epochs"),
    (lambda: evaluate.get_args_parser(), ["--pred", "p", "-o", "o", "--tol", "inf"], "--tol"),
    (lambda: export_model.get_args_parser(), ["m.pth", "-o", "x.zip", "--test-size", "0"], "--test-size"),
])
def test_numeric_flags_refuse_nan_inf_and_out_of_range(parser, argv, flag, capsys):
    with pytest.raises(SystemExit) as err:
        parser().parse_args(argv)
    assert err.value.code == 2
    line = one_line(capsys.readouterr().err, "error: argument", flag)
    assert "not a finite number" in line or "out of range" in line


# --------------------------------------------------------------------------- bad 7: export

def test_export_into_a_read_only_folder_stops_before_the_work(tmp_path, models, monkeypatch, capsys):
    (tmp_path / "ro").mkdir()
    read_only(monkeypatch, tmp_path / "ro")
    monkeypatch.setattr(export_model, "write_package", lambda *a: pytest.fail("the work started"))
    args = export_model.get_args_parser().parse_args([str(models["vesicle"]), "-o", str(tmp_path / "ro" / "v.zip")])
    assert export_model.main(args) == 2
    one_line(capsys.readouterr().err, str(tmp_path / "ro" / "v.zip"), "cannot write there (read-only file system)")


def test_export_write_failure_is_one_line_and_leaves_no_temp_file(tmp_path, models, monkeypatch, capsys):
    def full(model, example, path):
        pathlib.Path(path).write_bytes(b"half an onnx")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(export_model, "export_onnx", full)
    out = tmp_path / "m.onnx"
    args = export_model.get_args_parser().parse_args([str(models["vesicle"]), "-o", str(out), "--format", "onnx"])
    assert export_model.main(args) == 1
    one_line(capsys.readouterr().err, str(out), "cannot write (disk full)")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- bad 9 and training set checks

def test_training_onto_a_full_disk(tmp_path, monkeypatch, capsys):
    data = make_dataset(tmp_path / "data", n_train=2)
    out = tmp_path / "out"
    real_save = torch.save

    def full(obj, path, *a, **k):
        if "best_" in str(path):
            pathlib.Path(path).write_bytes(b"PK\x03\x04 half")
            raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing "
                               "file data/0: file write failed")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(unet.torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 ** 9, 10 ** 9, 0))
    capsys.readouterr()
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, out)) == 1
    one_line(capsys.readouterr().err, "best_vesicle_model.pth", "cannot write (disk full)", "--resume")
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no .best_vesicle_model.pth.tmpNNNN


def test_training_on_all_empty_masks_is_refused(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_train=2)
    for mask in (data / "train" / "mask").glob("*.npy"):
        np.save(mask, np.zeros_like(np.load(mask)))
    capsys.readouterr()
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, tmp_path / "out")) == 2
    one_line(capsys.readouterr().err, str(data / "train" / "mask"), "no training mask holds a single foreground")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- minor kinds

def test_partial_files_of_a_killed_run_are_removed(tmp_path, models, capsys):
    src = tmp_path / "in"
    write(src / "good.tif", blobs((40, 40)))
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".objects.part4194305.csv"  # above Linux's largest pid: no such process
    stale.write_text("file,plane\n")
    mine = out / f".summary.part{os.getppid()}.csv"  # a live process's (this one's parent): kept
    mine.write_text("x")
    code, err = segment(SynSeg_Vesicle, capsys, "-i", src, "-o", out, "-m", models["vesicle"])
    assert code == 0
    one_line(err, "removed 1 partial file(s)")
    assert not stale.exists() and mine.exists()


def test_nan_weights_are_refused(tmp_path, models, capsys):
    ckpt = torch.load(models["vesicle"], weights_only=True)
    key = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][key] = torch.full_like(ckpt["state_dict"][key], float("nan"))
    path = tmp_path / "nan.pth"
    torch.save(ckpt, path)
    img = write(tmp_path / "a.tif", blobs((32, 32)))
    code, err = segment(SynSeg_Vesicle, capsys, "-i", img, "-o", tmp_path / "out", "-m", path)
    assert code == 2
    one_line(err, "nan.pth", "hold NaN or inf", key)
    assert not (tmp_path / "out" / "a_mask.tif").exists()


def test_nan_probability_fails_the_file(tmp_path, models, capsys, monkeypatch):
    from synseg.segment import predict

    def nan_map(self, plane, factor, progress, **_):
        return np.full(plane.shape, np.nan, np.float32)

    monkeypatch.setattr(predict.Segmenter, "probability", nan_map)
    if hasattr(predict.Segmenter, "probabilities"):  # several planes per forward pass
        monkeypatch.setattr(predict.Segmenter, "probabilities",
                            lambda self, planes, live, factor, progress, **_: (
                                nan_map(self, planes[k], factor, progress) for k in live))
    img = write(tmp_path / "a.tif", blobs((32, 32)))
    code, err = segment(SynSeg_Vesicle, capsys, "-i", img, "-o", tmp_path / "out", "-m", models["vesicle"])
    assert code == 1
    one_line(err, "a.tif", "the model's output holds NaN", "no mask written")
    assert not (tmp_path / "out" / "a_mask.tif").exists()


def test_ome_tiff_with_several_series_says_only_the_first_is_segmented(tmp_path, models, capsys):
    path = tmp_path / "multi.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        for k in range(3):
            tif.write(blobs((32, 32), seed=k), metadata={"axes": "YX"})
    code, err = segment(SynSeg_Vesicle, capsys, "-i", path, "-o", tmp_path / "out", "-m", models["vesicle"])
    assert code == 0
    one_line(err, "multi.ome.tif", "holds 3 image series", "only the first")


@pytest.mark.parametrize("kind,words", [
    ("wrong_shape", ("size mismatch for", "shape")),
    ("bioimageio", ("is a bioimage.io package", "not a checkpoint")),
    ("zip_pickle", ("refused to load", "holds Python objects", "posix.system")),
])
def test_checkpoint_messages_name_the_problem(tmp_path, models, capsys, kind, words):
    path = tmp_path / f"{kind}.pth"
    if kind == "wrong_shape":
        ckpt = torch.load(models["vesicle"], weights_only=True)
        key = next(iter(ckpt["state_dict"]))
        ckpt["state_dict"][key] = torch.zeros(3, 3)
        torch.save(ckpt, path)
    elif kind == "bioimageio":
        import zipfile

        with zipfile.ZipFile(path, "w") as z:
            z.writestr("rdf.yaml", "type: model\n")
            z.writestr("weights_state_dict.pt", b"")
    else:
        class Payload:
            def __reduce__(self):
                return os.system, ("true",)

        torch.save({"state_dict": Payload()}, path)  # torch's zip format with a code-running pickle inside
    img = write(tmp_path / "a.tif", blobs((32, 32)))
    code, err = segment(SynSeg_Vesicle, capsys, "-i", img, "-o", tmp_path / "out", "-m", path)
    assert code == 2
    one_line(err, f"{kind}.pth", *words)


def test_atomic_writer_names_path_and_reason(tmp_path):
    target = tmp_path / "t.csv"
    target.write_text("earlier")
    for raised, reason in ((OSError("65536 requested and 4008 written"), "disk full: 4008 of 65536 bytes written"),
                           (OSError(errno.ENOSPC, "No space left on device"), "disk full"),
                           (OSError(errno.EROFS, "Read-only file system"), "read-only file system"),
                           (UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates"), "cannot be encoded")):
        with pytest.raises(tiffio.WriteError) as err:
            with tiffio.atomic_path(target) as tmp:
                tmp.write_text("half")
                raise raised
        assert str(err.value).startswith(f"{target}: cannot write (") and reason in str(err.value)
        assert target.read_text() == "earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]
