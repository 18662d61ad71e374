"""Cytoskeleton_generator.py end to end on tiny images: layout, dtypes, flags, determinism."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synseg.generate import cytoskeleton_generator as cg
from synseg.generate import dataset
from synseg.generate import synth
from synseg import tiffio

ROOT = Path(__file__).resolve().parents[1]


def run_main(*argv):
    """Exit code of the script's parse + main for argv (2 for a flag rejected while parsing)."""
    try:
        return cg.main(cg.get_args_parser().parse_args([str(a) for a in argv]))
    except SystemExit as err:
        return err.code


def files(out):
    return sorted(p.relative_to(out).as_posix() for p in Path(out).rglob("*") if p.is_file())


def test_render_one_gives_uint8_image_and_binary_mask():
    args = cg.get_args_parser().parse_args(["--output-dir", "unused", "--image-size", "48"])
    for index in range(3):
        image, mask, rows = cg.render_one(synth.image_rng(0, index), args)
        assert image.dtype == np.uint8 and image.shape == (48, 48)
        assert mask.dtype == np.uint8 and mask.shape == (48, 48) and set(np.unique(mask)) <= {0, 1}
        assert rows is None
    a = cg.render_one(synth.image_rng(5, 2), args)
    b = cg.render_one(synth.image_rng(5, 2), args)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_generator_defaults_reach_the_scene():
    args = cg.get_args_parser().parse_args(["--output-dir", "unused"])
    scene = synth.scene_from_args(args, cg.filaments.Filaments, cg.BIT_DEPTH)
    assert scene.background.cytoplasm == (0.0, 2.5) and scene.background.haze == (0.0, 0.5)
    assert scene.bit_depth == 8 and scene.image_size == 512


def test_cli_writes_matching_pairs_with_original_flag_spellings(tmp_path):
    out = tmp_path / "data"
    proc = subprocess.run([sys.executable, str(ROOT / "Cytoskeleton_generator.py"), "--output_dir", str(out),
                           "--num_images", "3", "--image_size", "40", "--val-fraction", "0.34",
                           "--num_curves", "5", "--seed", "3"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out / "generator.json").is_file()
    assert len(list(out.glob("val/img/*.tif"))) == 1 and len(list(out.glob("train/img/*.tif"))) == 2
    assert not list(out.rglob("*.csv"))  # no per-object table for filaments
    for index in range(3):
        paths = dataset.image_paths(out, index, 3, 0.34)
        image, meta = tiffio.read_image(paths["img"])
        mask = np.load(paths["mask"])
        assert image.dtype == np.uint8 and image.shape == (40, 40)
        assert mask.dtype == np.uint8 and mask.shape == image.shape and set(np.unique(mask)) <= {0, 1}
        assert meta["pixel_size_um"] == pytest.approx(0.1, rel=1e-4)


def test_help_works():
    proc = subprocess.run([sys.executable, str(ROOT / "Cytoskeleton_generator.py"), "--help"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and "--filaments" in proc.stdout and "--output_size" in proc.stdout


def test_output_size_alias_and_one_or_two_workers_give_identical_files(tmp_path):
    assert run_main("--output-dir", tmp_path / "a", "--num-images", "4", "--output_size", "32",
                    "--seed", "9") == 0
    assert run_main("--output-dir", tmp_path / "b", "--num-images", "4", "--image-size", "32",
                    "--seed", "9", "--workers", "2") == 0
    names = [n for n in files(tmp_path / "a") if n != "generator.json"]
    assert names == [n for n in files(tmp_path / "b") if n != "generator.json"] and len(names) == 8
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.parametrize("argv, flag", [
    (["--filament-length", "9", "2"], "--filament-length"),
    (["--mito-prob", "-0.1"], "--mito-prob"),
    (["--num-images", "0"], "--num-images"),
    (["--persistence-length", "0", "0"], "--persistence-length"),
    (["--er-prob", "0.6", "--mito-prob", "0.6"], "--er-prob"),
])
def test_bad_flags_exit_2_naming_the_flag(argv, flag, tmp_path, capsys):
    assert run_main("--output-dir", tmp_path / "d", *argv) == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
