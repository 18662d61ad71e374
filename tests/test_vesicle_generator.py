"""Vesicle_generator.py from parsed arguments: masks cover the vesicles, old flags, CLI end to end."""
import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from synseg.generate import dataset
from synseg.generate import synth
from synseg.generate import vesicle_generator as vg
from synseg.generate import vesicles

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--debris", "0", "0", "--haze", "0", "0", "--cytoplasm", "0", "0", "--out-of-focus", "0", "0",
         "--illumination", "0", "0", "--saturation-prob", "0", "0", "--offset", "0", "0",
         "--autofluorescence-prob", "0", "--background-subtracted-prob", "0"]


def parse(*argv):
    return vg.get_args_parser().parse_args(["--output-dir", "unused", "--image-size", "96", *argv])


def components(mask):
    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1


def test_render_one_types_and_rows_match_components():
    args = parse("--num-spots", "40", "60", "--touching-fraction", "0.3", "0.3", "--snr", "15", "250")
    for index in range(3):
        image, mask, rows = vg.render_one(synth.image_rng(0, index), args)
        assert image.dtype == np.uint16 and image.shape == (96, 96)
        assert mask.dtype == np.uint8 and mask.shape == (96, 96) and set(np.unique(mask)) <= {0, 1}
        assert rows and set(rows[0]) == {"y", "x", "radius", "brightness"}
        assert len(rows) == components(mask)  # one component per labelled vesicle, touching ones included
        for row in rows:
            assert -1 < row["y"] < 97 and -1 < row["x"] < 97 and row["radius"] > 0 and row["brightness"] > 0


def test_mask_covers_the_vesicles_in_a_clean_render():
    args = parse("--num-spots", "30", "30", "--snr", "200", "200", "--background-photons", "5", "5", *QUIET)
    for index in range(3):
        image, mask, rows = vg.render_one(synth.image_rng(1, index), args)
        x = image.astype(float)
        assert mask.any()
        assert x[mask > 0].mean() > 3 * x[mask == 0].mean()
        # nearly every vesicle centre lies on mask (the rest are cut at a touching border)
        on = [mask[int(r["y"]), int(r["x"])] for r in rows if 0 <= r["y"] < 96 and 0 <= r["x"] < 96]
        assert np.mean(on) > 0.85


def test_out_of_focus_vesicles_stay_out_of_the_mask():
    args = parse("--num-spots", "30", "30", "--out-of-focus", "1", "1", *QUIET[:6])
    image, mask, rows = vg.render_one(synth.image_rng(0, 0), args)
    assert not mask.any() and rows == []
    assert image.max() > image.min()


def test_faint_vesicles_are_drawn_but_not_labelled():
    common = ["--num-spots", "30", "30", "--out-of-focus", "0", "0", "--snr", "3", "3", "--snr-spread", "1", "1",
              "--background-photons", "5", "5", *QUIET]
    image, mask, rows = vg.render_one(synth.image_rng(2, 0), parse(*common, "--label-snr", "5"))
    assert not mask.any() and rows == []  # every vesicle has SNR 3 < 5
    noiseless_faint = vg.render_one(synth.image_rng(2, 0), parse(*common, "--label-snr", "0"))
    assert noiseless_faint[1].any() and len(noiseless_faint[2]) > 0  # the same spots, labelled at 0
    np.testing.assert_array_equal(image, noiseless_faint[0])  # labelling never changes the image


def run_cli(*argv):
    return subprocess.run([sys.executable, str(ROOT / "Vesicle_generator.py"), *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_cli_writes_dataset_and_same_bytes_for_two_workers(tmp_path):
    common = ["--num-images", "4", "--image_size", "48", "--val-fraction", "0.25", "--cell-radius", "1", "3"]
    one = run_cli("--output-dir", str(tmp_path / "a"), *common, "--preview")
    two = run_cli("--output_dir", str(tmp_path / "b"), *common, "--workers", "2")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    a, b = tmp_path / "a", tmp_path / "b"
    assert sorted(p.name for p in (a / "train" / "img").iterdir()) == ["00000.tif", "00001.tif", "00002.tif"]
    assert sorted(p.name for p in (a / "val" / "mask").iterdir()) == ["00003.csv", "00003.npy"]
    assert (a / "preview.png").is_file()
    for path in sorted(a.rglob("*")):
        if path.is_file() and path.suffix in (".tif", ".npy", ".csv"):
            assert path.read_bytes() == (b / path.relative_to(a)).read_bytes(), path
    with open(a / "train" / "mask" / "00000.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == components(np.load(a / "train" / "mask" / "00000.npy"))


def test_cli_refuses_bad_range_and_existing_output(tmp_path):
    bad = run_cli("--output-dir", str(tmp_path / "x"), "--radius", "0.5", "0.1")
    assert bad.returncode == 2 and "--radius" in bad.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something.txt").write_text("keep me")
    busy = run_cli("--output-dir", str(tmp_path / "full"), "--num-images", "1", "--image-size", "32")
    assert busy.returncode != 0 and "--resume" in busy.stderr


def test_original_flag_spellings():
    args = vg.get_args_parser().parse_args(["--output_dir", "d", "--num_images", "3", "--pixel-size", "0.2",
                                            "--num_spots_min", "5", "--num_spots_max", "9",
                                            "--min_radius", "1", "--max_radius", "2"])
    params = synth.scene_from_args(args, vesicles.Vesicles, vg.BIT_DEPTH).structure
    assert dataset.Run.from_args(args).num_images == 3 and params.num_spots == (5, 9)
    assert params.radius == pytest.approx((0.2, 0.4))  # original radii were in pixels


def test_cli_checks_values_after_parsing(tmp_path):
    bad = run_cli("--output-dir", str(tmp_path / "x"), "--label-relative", "1.5")
    assert bad.returncode == 2 and "--label-relative: 1.5 is outside the allowed range [0.0, 1.0)" in bad.stderr
    swapped = run_cli("--output-dir", str(tmp_path / "y"), "--num_spots_min", "9", "--num_spots_max", "5")
    assert swapped.returncode == 2 and "--num-spots: MIN 9 is above MAX 5" in swapped.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cli_image_without_vesicles_gets_a_table_header(tmp_path):
    done = run_cli("--output-dir", str(tmp_path / "d"), "--num-images", "2", "--image-size", "32",
                   "--num-spots", "0", "0", "--val-fraction", "0")
    assert done.returncode == 0, done.stderr
    for name in ("00000.csv", "00001.csv"):
        assert (tmp_path / "d" / "train" / "mask" / name).read_text() == "y,x,radius,brightness\n"


def test_help_works():
    done = run_cli("--help")
    assert done.returncode == 0 and "--num-spots" in done.stdout and "--output-dir" in done.stdout


@pytest.mark.parametrize("extra", [["--num-spots", "0", "0"], ["--cells", "0", "0"], ["--image-size", "9"],
                                   ["--radius", "0.02", "0.03", "--snr", "50", "60", "--psf-scale", "1", "1"]])
def test_edge_cases_render(extra):
    for index in range(4):
        image, mask, rows = vg.render_one(synth.image_rng(3, index), parse(*extra))
        assert image.shape == mask.shape and image.dtype == np.uint16
        assert len(rows) == components(mask)
        if extra[0] == "--num-spots":
            assert not mask.any() and rows == []




def test_background_subtracted_images_are_zero_clipped():
    args = parse("--background-subtracted-prob", "1", "--background-subtracted-zero", "0.4", "0.4")
    image, mask, _ = vg.render_one(synth.image_rng(3, 0), args)
    zero = np.mean(image == 0)
    assert 0.3 < zero < 0.5  # about the asked share of the pixels is exactly 0
    assert image.dtype == np.uint16 and image.max() > 0


def test_autofluorescence_brightens_the_background_but_never_the_mask():
    base = parse(*QUIET)
    tissue = parse(*QUIET[:-4], "--autofluorescence-prob", "1", "--autofluorescence", "1", "1",
                   "--background-subtracted-prob", "0")
    img0, mask0, rows0 = vg.render_one(synth.image_rng(4, 0), base)
    img1, mask1, rows1 = vg.render_one(synth.image_rng(4, 0), tissue)
    assert np.array_equal(mask0, mask1) and rows0 == rows1  # the targets are drawn before, unchanged
    assert img1[mask1 == 0].astype(float).mean() > img0[mask0 == 0].astype(float).mean()


def test_new_options_off_draw_nothing():
    # with both new options at 0 the images are those of the generator before they existed
    off = parse("--autofluorescence-prob", "0", "--background-subtracted-prob", "0")
    again = parse("--autofluorescence-prob", "0", "--background-subtracted-prob", "0", "--autofluorescence", "2", "3")
    a, _, _ = vg.render_one(synth.image_rng(5, 1), off)
    b, _, _ = vg.render_one(synth.image_rng(5, 1), again)
    assert np.array_equal(a, b)
