"""synth.py and dataset.py: parameter dataclasses and flags, cell layer, camera statistics, dataset layout, determinism,
resume, preview."""
import argparse
import json
import shutil
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from synseg.generate import dataset as datasets
from synseg.generate import synth
from synseg import tiffio


@dataclass(frozen=True)
class Squares(synth.Flags):
    """A small known structure: `count` bright 3x3 squares, each with a 5x5 mask and a table row."""

    NEEDS_LEVELS: ClassVar[bool] = False
    COLUMNS: ClassVar[tuple] = ("y", "x")
    count: int = 4

    def render(self, rng, shape, context):
        density = np.zeros(shape, np.float32)
        mask = np.zeros(shape, np.uint8)
        rows = []
        for _ in range(self.count):
            y, x = (int(v) for v in rng.integers(3, shape[0] - 3, 2))
            density[y - 1:y + 2, x - 1:x + 2] = 1.0
            mask[y - 2:y + 3, x - 2:x + 3] = 1
            rows.append({"y": float(y), "x": float(x)})
        return synth.Rendered(density, None, mask, rows)


def parse(argv):
    parser = argparse.ArgumentParser(description="test")
    datasets.add_common_args(parser)
    return parser.parse_args(argv)


def dataset(out, structure=Squares(), **run):
    """(Run, Scene) of a 6-image 32x32 dataset of `structure` in `out`."""
    return (datasets.Run(output_dir=out, num_images=6, val_fraction=0.34, **run),
            synth.Scene(structure, image_size=32, background=synth.Background(cell_radius=(1, 2))))


def write(out, structure=Squares(), **run):
    return datasets.generate_dataset(*dataset(out, structure, **run), kind="tiny")


def files_of(root):
    """{relative path: bytes} of every file under root."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- parameters and flags

@pytest.mark.parametrize("argv, flag", [
    (["--cells", "3", "1"], "--cells"),
    (["--signal-photons", "100", "10"], "--signal-photons"),
    (["--saturation-prob", "0", "2"], "--saturation-prob"),
])
def test_bad_range_fails_at_parse_time_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as err:
        parse(["--output-dir", "x", *argv])
    assert err.value.code == 2
    assert flag in capsys.readouterr().err


@pytest.mark.parametrize("argv, flag, allowed", [
    (["--num-images", "0"], "--num-images", "[1, inf)"),
    (["--image-size", "0"], "--image-size", "[8, 8192]"),
    (["--val-fraction", "1.0"], "--val-fraction", "[0.0, 1.0)"),
    (["--pixel-size", "-0.1"], "--pixel-size", "(0.0, inf)"),
    (["--workers", "0"], "--workers", "[1, inf)"),
])
def test_bad_value_fails_in_from_args_naming_flag_and_range(argv, flag, allowed, tmp_path, capsys):
    args = parse(["--output-dir", str(tmp_path / "d"), *argv])
    with pytest.raises(ValueError, match=flag) as err:
        datasets.Run.from_args(args), synth.scene_from_args(args, Squares, 16)
    assert allowed in str(err.value)
    # a generator's main reports it, exit code 2, and writes nothing
    assert datasets.generate(args, Squares, kind="tiny", bit_depth=16) == 2
    assert flag in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_defaults_set_in_code_are_checked_too():
    parser = argparse.ArgumentParser()
    datasets.add_common_args(parser)
    parser.set_defaults(psf_scale=[3.0, 1.0])  # never passes through RangeAction
    with pytest.raises(ValueError, match="--psf-scale: MIN 3.0 is above MAX 1.0"):
        synth.Optics.from_args(parser.parse_args(["--output-dir", "x"]))


def test_dataclasses_check_without_a_parser():
    with pytest.raises(ValueError, match=r"--saturation-prob: 2 is outside the allowed range \[0.0, 1.0\]"):
        synth.Camera(saturation_prob=(0, 2))
    with pytest.raises(ValueError, match="--psf-sigma"):
        synth.Optics(psf_sigma=0.0)
    with pytest.raises(ValueError, match="--resume and --overwrite"):
        datasets.Run(output_dir="x", resume=True, overwrite=True)
    with pytest.raises(ValueError, match="bit_depth"):
        synth.Scene(Squares(), bit_depth=12)
    assert synth.Optics(psf_sigma=None).psf_sigma is None  # None: not given, not checked


def test_underscore_spellings_still_work():
    args = parse(["--output_dir", "d", "--num_images", "7", "--image_size", "40", "--val_fraction", "0.2"])
    run = datasets.Run.from_args(args)
    assert (str(run.output_dir), run.num_images, args.image_size, run.val_fraction) == ("d", 7, 40, 0.2)


def test_from_args_gives_frozen_tuples():
    camera = synth.Camera.from_args(parse(["--output-dir", "x", "--hot-pixels", "2", "5"]))
    assert camera.hot_pixels == (2, 5) and camera.gain == (0.5, 5.0)
    with pytest.raises(AttributeError):
        camera.gain = (1.0, 1.0)


def test_psf_sigma_from_optics_or_flag():
    assert synth.Optics(na=1.4, wavelength=0.52, pixel_size=0.1).psf_sigma_px == pytest.approx(0.21 * 0.52 / 1.4 / 0.1)
    assert synth.Optics(psf_sigma=0.2, pixel_size=0.05).psf_sigma_px == pytest.approx(4.0)


def test_image_rng_depends_only_on_seed_and_index():
    a = synth.image_rng(3, 5).random(4)
    assert np.array_equal(a, synth.image_rng(3, 5).random(4))
    assert not np.array_equal(a, synth.image_rng(3, 6).random(4))
    assert not np.array_equal(a, synth.image_rng(4, 5).random(4))


# --------------------------------------------------------------------------- rendering pieces

def test_cell_layer_shapes_and_ranges():
    layer = synth.cell_layer(synth.image_rng(0, 0), (64, 80), synth.Background(cells=(2, 2), cell_radius=(2, 3)), 0.1)
    assert layer["cells"].dtype == bool and layer["cells"].shape == (64, 80)
    assert layer["cytoplasm"].dtype == np.float32 and layer["cytoplasm"].shape == (64, 80)
    assert layer["cells"].any()
    assert 0.0 <= layer["cytoplasm"].min() and layer["cytoplasm"].max() <= 1.0
    assert not layer["cytoplasm"][~layer["cells"]].any()  # no cytoplasm outside cells
    assert not (layer["nuclei"] & ~layer["cells"]).any()
    empty = synth.cell_layer(synth.image_rng(0, 0), (32, 32), synth.Background(cells=(0, 0)), 0.1)
    assert not empty["cells"].any() and not empty["cytoplasm"].any()


@pytest.mark.parametrize("lam", [0.5, 3.0, 12.0, 200.0])
def test_shot_noise_has_poisson_mean_and_variance(lam):
    rng = np.random.default_rng(0)
    x = synth.shot_and_read_noise(rng, np.full((400, 500), lam, np.float32), read_noise=2.0)
    assert x.mean() == pytest.approx(lam, rel=0.02, abs=0.02)
    assert x.var() == pytest.approx(lam + 4.0, rel=0.03)


@pytest.mark.parametrize("bit_depth, dtype", [(8, np.uint8), (16, np.uint16)])
def test_finish_image_dtype_and_structure_visible(bit_depth, dtype):
    scene = synth.Scene(Squares(), image_size=48, bit_depth=bit_depth,
                        camera=synth.Camera(signal_photons=(5000, 5000), background_photons=(10, 10),
                                            saturation_prob=(0, 0)),
                        background=synth.Background(debris=(0, 0), haze=(0, 0), cytoplasm=(0, 0)))
    density = np.zeros((48, 48), np.float32)
    density[20:28, 20:28] = 1.0
    rng = synth.image_rng(0, 1)
    cells = synth.cell_layer(rng, density.shape, scene.background, scene.optics.pixel_size)
    levels = synth.draw_levels(rng, scene, psf_sigma=1.0)
    image = synth.finish_image(rng, density, None, cells, levels, scene)
    assert image.dtype == dtype and image.shape == density.shape
    assert image[21:27, 21:27].mean() > 3 * image[:10, :10].mean()


def test_render_one_chains_the_structure_through_the_camera():
    scene = synth.Scene(Squares(), image_size=40)
    image, mask, rows = synth.render_one(synth.image_rng(0, 2), scene)
    assert image.dtype == np.uint16 and image.shape == mask.shape == (40, 40) and len(rows) == 4
    again = synth.render_one(synth.image_rng(0, 2), scene)
    assert np.array_equal(image, again[0]) and np.array_equal(mask, again[1]) and rows == again[2]


# --------------------------------------------------------------------------- dataset writing

def test_layout_names_json_and_pixel_size(tmp_path):
    out = tmp_path / "d"
    assert write(out) == 0
    for split, expected in (("train", ["00000", "00001", "00003", "00004"]), ("val", ["00002", "00005"])):
        imgs = sorted(p.stem for p in (out / split / "img").glob("*.tif"))
        masks = sorted(p.stem for p in (out / split / "mask").glob("*.npy"))
        tables = sorted(p.stem for p in (out / split / "mask").glob("*.csv"))
        assert imgs == masks == tables == expected
    image, meta = tiffio.read_image(out / "train" / "img" / "00000.tif")
    mask = np.load(out / "train" / "mask" / "00000.npy")
    assert image.dtype == np.uint16 and image.shape == (32, 32) and meta["pixel_size_um"] == pytest.approx(0.1)
    assert mask.dtype == np.uint8 and mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 1}
    info = json.loads((out / "generator.json").read_text())
    assert info["kind"] == "tiny" and info["seed"] == 0 and info["pixel_size_um"] == pytest.approx(0.1)
    assert info["num_train"] == 4 and info["num_val"] == 2 and info["parameters"]["cells"] == [1, 4]
    assert info["parameters"]["image_size"] == 32 and info["parameters"]["cell_radius"] == [1, 2]
    assert (out / "train" / "mask" / "00000.csv").read_text().splitlines()[0] == "y,x"
    assert not list(out.rglob(".*part*"))


def test_empty_table_keeps_its_header(tmp_path):
    write(tmp_path / "d", Squares(count=0))
    for table in (tmp_path / "d").rglob("*.csv"):
        assert table.read_text() == "y,x\n"


def test_same_bytes_for_one_or_two_workers(tmp_path):
    write(tmp_path / "w1")
    write(tmp_path / "w2", workers=2)
    one, two = files_of(tmp_path / "w1"), files_of(tmp_path / "w2")
    assert len(one) == 6 * 3 + 1
    one.pop("generator.json"), two.pop("generator.json")  # records --workers and the folder
    assert one == two


def test_resume_equals_uninterrupted_run(tmp_path):
    full = tmp_path / "full"
    write(full)
    part = tmp_path / "part"
    shutil.copytree(full, part)
    (part / "train" / "img" / "00001.tif").unlink()  # interrupted before the image was renamed
    (part / "val" / "img" / "00005.tif").unlink()
    (part / "val" / "mask" / "00005.npy").unlink()
    (part / "val" / "mask" / "00005.csv").unlink()
    (part / "train" / "img" / ".00003.part4194305.tif").write_bytes(b"half")  # a killed process's temporary
    (part / "train" / "img" / "00004.tif").write_bytes(b"stale, must be kept")  # complete -> not redone
    assert write(part) == 2
    assert write(part, resume=True) == 0
    got, want = files_of(part), files_of(full)
    assert got.pop("train/img/00004.tif") == b"stale, must be kept"
    want.pop("train/img/00004.tif")
    assert "train/img/.00003.part4194305.tif" not in got  # removed by the resumed run
    meta_got, meta_want = (json.loads(d.pop("generator.json"))["parameters"] for d in (got, want))
    assert {k: v for k, v in meta_got.items() if k not in datasets.RUN_CONTROL} == \
        {k: v for k, v in meta_want.items() if k not in datasets.RUN_CONTROL}
    assert got == want


def test_resume_refuses_other_settings_and_overwrite_replaces(tmp_path, capsys):
    out = tmp_path / "d"
    write(out)
    assert write(out, resume=True, seed=9) == 2 and "seed" in capsys.readouterr().err
    before = (out / "train" / "img" / "00000.tif").read_bytes()
    assert write(out, overwrite=True, seed=9) == 0
    assert (out / "train" / "img" / "00000.tif").read_bytes() != before
    assert json.loads((out / "generator.json").read_text())["seed"] == 9


def test_resume_accepts_a_dataset_with_an_older_folded_spelling(tmp_path):
    out = tmp_path / "d"
    write(out)
    meta = json.loads((out / "generator.json").read_text())
    meta["parameters"]["num_curves"] = 5  # e.g. --num_curves, now recorded as --filaments 5 5
    (out / "generator.json").write_text(json.dumps(meta))
    assert write(out, resume=True) == 0


def test_preview_written(tmp_path):
    out = tmp_path / "d"
    write(out, preview=True)
    data = (out / "preview.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


@pytest.mark.parametrize("sigma", [0.6, 0.9])
def test_correlated_noise_keeps_level_and_adds_grain(sigma):
    rng = np.random.default_rng(3)
    photons = np.full((192, 192), 40.0, np.float32)
    electrons = synth.shot_and_read_noise(rng, photons, 2.0)
    grainy = synth.correlate_noise(electrons, photons, sigma) - photons
    white = electrons - photons
    assert abs(grainy.std() / white.std() - 1.0) < 0.05  # same noise level
    lag1 = np.corrcoef(grainy[:, 1:].ravel(), grainy[:, :-1].ravel())[0, 1]
    # white noise blurred by a sampled Gaussian k: lag-1 correlation sum(k[i] k[i+1]) / sum(k^2)
    xs = np.arange(-10, 11)
    k = np.exp(-xs ** 2 / (2 * sigma * sigma))
    assert abs(lag1 - (k[1:] * k[:-1]).sum() / (k * k).sum()) < 0.03 and lag1 > 0.4
    assert abs(np.corrcoef(white[:, 1:].ravel(), white[:, :-1].ravel())[0, 1]) < 0.05
