"""evaluate.py on the folder layouts of the generators and the segmentation scripts, made in code."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import evaluate
from synseg import tiffio

ROOT = Path(__file__).resolve().parents[1]
CENTRES = [(8, 8), (8, 24), (24, 16)]


def spots(shape=(32, 32), centres=CENTRES, r=3):
    yy, xx = np.indices(shape)
    m = np.zeros(shape, np.uint8)
    for cy, cx in centres:
        m[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    return m


def make_dataset(root: Path, n=3):
    """Generator layout: DATA/val/img/0000k.tif, DATA/val/mask/0000k.npy (0/1) and 0000k.csv (y,x,radius,brightness)."""
    img_dir, mask_dir = root / "val" / "img", root / "val" / "mask"
    img_dir.mkdir(parents=True)
    mask_dir.mkdir(parents=True)
    for k in range(n):
        m = spots()
        tiffio.write_tiff(img_dir / f"{k:05d}.tif", m.astype(np.uint16) * 1000 + 100 + k, pixel_size_um=0.1)
        np.save(mask_dir / f"{k:05d}.npy", m)
        with open(mask_dir / f"{k:05d}.csv", "w") as fh:
            fh.write("y,x,radius,brightness\n" + "".join(f"{y},{x},3,1000\n" for y, x in CENTRES))
    return img_dir, mask_dir


def write_pred(out: Path, name: str, mask, pixel_size_um=0.1, prob=None):
    """Segmentation-script layout: OUT/NAME_mask.tif (uint8 0/255, ImageJ tags), optional NAME_prob.tif."""
    tiffio.write_tiff(out / f"{name}_mask.tif", (np.asarray(mask) != 0).astype(np.uint8) * 255,
                      pixel_size_um=pixel_size_um)
    if prob is not None:
        tiffio.write_tiff(out / f"{name}_prob.tif", prob.astype(np.float32), pixel_size_um=pixel_size_um)


def run(argv):
    return evaluate.main(evaluate.get_args_parser().parse_args([str(a) for a in argv]))


def mean_row(report: Path) -> dict:
    with open(report / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows[-2:]] == ["mean", "std"]
    return rows[-2]


def test_prediction_equal_to_ground_truth_scores_one(tmp_path):
    img_dir, mask_dir = make_dataset(tmp_path / "DATA")
    pred = tmp_path / "pred"
    pred.mkdir()
    for k in range(3):
        m = np.load(mask_dir / f"{k:05d}.npy")
        write_pred(pred, f"{k:05d}", m, prob=m * 0.8 + 0.1)
    (pred / "00000_overlay.png").write_bytes(b"not a mask, must be ignored")
    report = tmp_path / "report"
    assert run(["--pred", pred, "--gt", mask_dir, "--gt-points", mask_dir, "--prob", "-o", report, "--grid"]) == 0
    mean = mean_row(report)
    for col in ("dice", "iou", "precision", "recall", "auc", "cldice", "skel_f1", "obj_f1", "spot_f1"):
        assert float(mean[col]) == 1.0, col
    assert float(mean["hd95_px"]) == 0.0 and float(mean["n_points"]) == 3
    summary = json.loads((report / "metrics.json").read_text())
    assert summary["n_images"] == 3 and summary["summary"]["dice"]["mean"] == 1.0
    assert summary["unpaired"]["pred_without_gt"] == []
    assert (report / "grid.png").stat().st_size > 1000


def test_empty_prediction_scores_zero_and_hd95_is_left_out(tmp_path, capsys):
    _, mask_dir = make_dataset(tmp_path / "DATA", n=2)
    pred = tmp_path / "pred"
    pred.mkdir()
    for k in range(2):
        write_pred(pred, f"{k:05d}", np.zeros((32, 32)))
    report = tmp_path / "report"
    assert run(["--pred", pred, "--gt", mask_dir, "--gt-points", mask_dir, "-o", report]) == 0
    mean = mean_row(report)
    assert float(mean["dice"]) == 0.0 and float(mean["recall"]) == 0.0 and float(mean["spot_recall"]) == 0.0
    assert mean["hd95_px"] == ""  # both images inf: no finite mean
    summary = json.loads((report / "metrics.json").read_text())
    assert summary["images"][0]["hd95_px"] == "inf"
    assert summary["summary"]["hd95_px"]["n_excluded"] == 2
    assert "2 left out" in capsys.readouterr().out


def test_hd95_in_um_from_the_prediction_tags(tmp_path):
    _, mask_dir = make_dataset(tmp_path / "DATA", n=1)
    pred = tmp_path / "pred"
    pred.mkdir()
    write_pred(pred, "00000", np.roll(np.load(mask_dir / "00000.npy"), 1, axis=1), pixel_size_um=0.25)
    report = tmp_path / "report"
    assert run(["--pred", pred, "--gt", mask_dir, "-o", report]) == 0
    row = json.loads((report / "metrics.json").read_text())["images"][0]
    assert row["hd95_px"] == pytest.approx(1.0)
    assert row["hd95_um"] == pytest.approx(0.25)
    assert row["pixel_size_um"] == pytest.approx(0.25)


def test_unpaired_files_are_listed_not_dropped(tmp_path, capsys):
    _, mask_dir = make_dataset(tmp_path / "DATA", n=2)
    pred = tmp_path / "pred"
    pred.mkdir()
    write_pred(pred, "00000", np.load(mask_dir / "00000.npy"))
    write_pred(pred, "stray", np.zeros((32, 32)))
    report = tmp_path / "report"
    assert run(["--pred", pred, "--gt", mask_dir, "-o", report]) == 0
    err = capsys.readouterr().err
    assert "stray_mask.tif" in err and "00001.npy" in err
    unpaired = json.loads((report / "metrics.json").read_text())["unpaired"]
    assert unpaired == {"pred_without_gt": ["stray_mask.tif"], "gt_without_pred": ["00001.npy"]}


def test_nothing_paired_is_an_error(tmp_path, capsys):
    _, mask_dir = make_dataset(tmp_path / "DATA", n=1)
    pred = tmp_path / "pred"
    pred.mkdir()
    write_pred(pred, "other", np.zeros((32, 32)))
    assert run(["--pred", pred, "--gt", mask_dir, "-o", tmp_path / "r"]) == 1
    assert "no prediction" in capsys.readouterr().err
    assert not (tmp_path / "r" / "metrics.csv").exists()


def test_a_bad_pair_is_named_and_the_rest_scored(tmp_path, capsys):
    _, mask_dir = make_dataset(tmp_path / "DATA", n=2)
    pred = tmp_path / "pred"
    pred.mkdir()
    write_pred(pred, "00000", np.load(mask_dir / "00000.npy"))
    write_pred(pred, "00001", np.zeros((16, 32)))  # wrong shape
    report = tmp_path / "report"
    assert run(["--pred", pred, "--gt", mask_dir, "-o", report]) == 1
    assert "00001_mask.tif" in capsys.readouterr().err
    assert json.loads((report / "metrics.json").read_text())["n_images"] == 1


def test_points_only_with_realdata_style_names(tmp_path):
    pred, pts = tmp_path / "pred", tmp_path / "points"
    pred.mkdir()
    pts.mkdir()
    write_pred(pred, "beads_img", spots())  # as the segmentation script names beads_img.tif's mask
    (pts / "beads_points_yx.csv").write_text("y,x\n8,9\n30,30\n")  # one near spot 1, one far from all
    report = tmp_path / "report"
    assert run(["--pred", pred, "--gt-points", pts, "-o", report, "--tol-px", "3"]) == 0
    row = json.loads((report / "metrics.json").read_text())["images"][0]
    assert (row["n_pred_spots"], row["n_points"]) == (3, 2)
    assert row["spot_precision"] == pytest.approx(1 / 3) and row["spot_recall"] == pytest.approx(0.5)
    assert "dice" not in row


def test_instance_label_ground_truth_keeps_touching_objects(tmp_path):
    gt_dir, pred = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred.mkdir()
    labels = np.zeros((20, 20), np.uint16)
    labels[4:10, 4:8], labels[4:10, 8:16] = 1, 2  # two touching nuclei, 24 and 48 px
    tiffio.write_tiff(gt_dir / "nuc.tif", labels)
    write_pred(pred, "nuc", labels > 0)  # found as one blob: IoU 1/3 and 2/3, only the larger matches
    report = tmp_path / "report"
    assert run(["--pred", pred, "--gt", gt_dir, "-o", report]) == 0
    row = json.loads((report / "metrics.json").read_text())["images"][0]
    assert (row["dice"], row["n_gt_objects"], row["n_pred_objects"], row["obj_recall"]) == (1.0, 2, 1, 0.5)


@pytest.mark.parametrize("text,expected", [("y,x\n1.5,2\n3,4\n", [[1.5, 2], [3, 4]]),
                                           ("1.5,2\n3,4\n", [[1.5, 2], [3, 4]]),
                                           ("x,y,radius\n2,1.5,3\n", [[1.5, 2]]),
                                           ("index,axis-0,axis-1\n0,1.5,2\n", [[1.5, 2]]),
                                           ("y,x\n", np.zeros((0, 2)))])
def test_read_points_header_optional(tmp_path, text, expected):
    path = tmp_path / "p.csv"
    path.write_text(text)
    np.testing.assert_array_equal(evaluate.read_points(path), expected)


def test_read_points_names_a_bad_file(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("y,x\n1,oops\n")
    with pytest.raises(ValueError, match="bad.csv"):
        evaluate.read_points(path)


@pytest.mark.parametrize("name,key", [("00000_mask.tif", "00000"), ("00000.npy", "00000"),
                                      ("cell_img_mask.tif", "cell"), ("cell_points_yx.csv", "cell"),
                                      ("a_prob.tiff", "a"), ("_mask.tif", "_mask")])
def test_pair_key(name, key):
    assert evaluate.pair_key(name) == key


def test_two_files_with_one_key_are_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 2)))
    tiffio.write_tiff(tmp_path / "a_mask.tif", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="a.npy and a_mask.tif"):
        evaluate.index_folder(tmp_path, evaluate.MASK_SUFFIXES, prefer_roles=evaluate.MASK_ROLES)


def test_images_and_masks_in_one_folder(tmp_path):
    flat, pred = tmp_path / "flat", tmp_path / "pred"
    flat.mkdir()
    pred.mkdir()
    tiffio.write_tiff(flat / "cell.tif", spots().astype(np.uint16) * 500)  # the raw image
    tiffio.write_tiff(flat / "cell_mask.tif", spots() * 255)  # its ground truth
    write_pred(pred, "cell", spots())
    report = tmp_path / "report"
    assert run(["--pred", pred, "--gt", flat, "--images", flat, "-o", report, "--grid"]) == 0
    row = json.loads((report / "metrics.json").read_text())["images"][0]
    assert row["gt_file"] == "cell_mask.tif" and row["dice"] == 1.0
    assert evaluate.index_folder(flat, evaluate.IMAGE_SUFFIXES,
                                 skip_roles=evaluate.NOT_MASKS + evaluate.MASK_ROLES)["cell"].name == "cell.tif"


def test_cli_end_to_end_and_bad_flags(tmp_path):
    _, mask_dir = make_dataset(tmp_path / "DATA", n=1)
    report = tmp_path / "report"
    ok = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--pred", str(mask_dir), "--gt", str(mask_dir),
                         "--output_dir", str(report)], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert (report / "metrics.csv").exists() and "dice" in ok.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--pred", str(mask_dir), "-o", str(report)],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "--gt" in bad.stderr
