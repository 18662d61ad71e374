"""synth.py: argument checks, cell layer, camera statistics, dataset layout, determinism, resume, preview."""
import json
import shutil

import numpy as np
import pytest

import synth
import tiffio


def tiny_render(rng, args):
    """A small known scene: bright 3x3 squares on cells, through the full finish_image pipeline."""
    shape = (args.image_size, args.image_size)
    cells = synth.cell_layer(rng, shape, args)
    density = np.zeros(shape, np.float32)
    mask = np.zeros(shape, np.uint8)
    rows = []
    for _ in range(4):
        y, x = (int(v) for v in rng.integers(3, args.image_size - 3, 2))
        density[y - 1:y + 2, x - 1:x + 2] = 1.0
        mask[y - 2:y + 3, x - 2:x + 3] = 1
        rows.append({"y": float(y), "x": float(x)})
    image = synth.finish_image(rng, density, None, cells, args, 16)
    return image, mask, rows


def parse(argv):
    parser = synth.ArgumentParser(description="test")
    synth.add_common_args(parser)
    return parser.parse_args(argv)


def dataset_args(out, *extra):
    return parse(["--output-dir", str(out), "--num-images", "6", "--image-size", "32",
                  "--val-fraction", "0.34", "--cell-radius", "1", "2", *extra])


def files_of(root):
    """{relative path: bytes} of every file under root."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("argv, flag", [
    (["--cells", "3", "1"], "--cells"),
    (["--signal-photons", "100", "10"], "--signal-photons"),
    (["--num-images", "0"], "--num-images"),
    (["--image-size", "0"], "--image-size"),
    (["--val-fraction", "1.0"], "--val-fraction"),
    (["--pixel-size", "-0.1"], "--pixel-size"),
    (["--saturation-prob", "0", "2"], "--saturation-prob"),
    (["--workers", "0"], "--workers"),
])
def test_bad_flags_fail_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as err:
        parse(["--output-dir", "x", *argv])
    assert err.value.code == 2
    assert flag in capsys.readouterr().err


def test_underscore_spellings_still_work():
    args = parse(["--output_dir", "d", "--num_images", "7", "--image_size", "40", "--val_fraction", "0.2"])
    assert (str(args.output_dir), args.num_images, args.image_size, args.val_fraction) == ("d", 7, 40, 0.2)


def test_psf_sigma_from_optics_or_flag():
    args = parse(["--output-dir", "x", "--na", "1.4", "--wavelength", "0.52", "--pixel-size", "0.1"])
    assert synth.psf_sigma_px(args) == pytest.approx(0.21 * 0.52 / 1.4 / 0.1)
    args = parse(["--output-dir", "x", "--psf-sigma", "0.2", "--pixel-size", "0.05"])
    assert synth.psf_sigma_px(args) == pytest.approx(4.0)


def test_image_rng_depends_only_on_seed_and_index():
    a = synth.image_rng(3, 5).random(4)
    assert np.array_equal(a, synth.image_rng(3, 5).random(4))
    assert not np.array_equal(a, synth.image_rng(3, 6).random(4))
    assert not np.array_equal(a, synth.image_rng(4, 5).random(4))


# --------------------------------------------------------------------------- rendering pieces

def test_cell_layer_shapes_and_ranges():
    args = parse(["--output-dir", "x", "--cells", "2", "2", "--cell-radius", "2", "3"])
    layer = synth.cell_layer(synth.image_rng(0, 0), (64, 80), args)
    assert layer["cells"].dtype == bool and layer["cells"].shape == (64, 80)
    assert layer["cytoplasm"].dtype == np.float32 and layer["cytoplasm"].shape == (64, 80)
    assert layer["cells"].any()
    assert 0.0 <= layer["cytoplasm"].min() and layer["cytoplasm"].max() <= 1.0
    assert not layer["cytoplasm"][~layer["cells"]].any()  # no cytoplasm outside cells
    assert not (layer["nuclei"] & ~layer["cells"]).any()
    empty = synth.cell_layer(synth.image_rng(0, 0), (32, 32),
                             parse(["--output-dir", "x", "--cells", "0", "0"]))
    assert not empty["cells"].any() and not empty["cytoplasm"].any()


@pytest.mark.parametrize("lam", [0.5, 3.0, 12.0, 200.0])
def test_shot_noise_has_poisson_mean_and_variance(lam):
    rng = np.random.default_rng(0)
    x = synth.shot_and_read_noise(rng, np.full((400, 500), lam, np.float32), read_noise=2.0)
    assert x.mean() == pytest.approx(lam, rel=0.02, abs=0.02)
    assert x.var() == pytest.approx(lam + 4.0, rel=0.03)


@pytest.mark.parametrize("bit_depth, dtype", [(8, np.uint8), (16, np.uint16)])
def test_finish_image_dtype_and_structure_visible(bit_depth, dtype):
    args = parse(["--output-dir", "x", "--signal-photons", "5000", "5000", "--background-photons", "10", "10",
                  "--debris", "0", "0", "--haze", "0", "0", "--cytoplasm", "0", "0", "--saturation-prob", "0", "0"])
    density = np.zeros((48, 48), np.float32)
    density[20:28, 20:28] = 1.0
    cells = synth.cell_layer(synth.image_rng(0, 1), density.shape, args)
    image = synth.finish_image(synth.image_rng(0, 1), density, None, cells, args, bit_depth)
    assert image.dtype == dtype and image.shape == density.shape
    assert image[21:27, 21:27].mean() > 3 * image[:10, :10].mean()


# --------------------------------------------------------------------------- dataset writing

def test_layout_names_json_and_pixel_size(tmp_path):
    out = tmp_path / "d"
    assert synth.generate_dataset(dataset_args(out), tiny_render, kind="tiny", bit_depth=16) == 0
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
    assert "y,x" in (out / "train" / "mask" / "00000.csv").read_text().splitlines()[0]
    assert not list(out.rglob(".*part*"))


def test_same_bytes_for_one_or_two_workers(tmp_path):
    synth.generate_dataset(dataset_args(tmp_path / "w1"), tiny_render, kind="tiny", bit_depth=16)
    synth.generate_dataset(dataset_args(tmp_path / "w2", "--workers", "2"), tiny_render, kind="tiny", bit_depth=16)
    one, two = files_of(tmp_path / "w1"), files_of(tmp_path / "w2")
    assert len(one) == 6 * 3 + 1
    one.pop("generator.json"), two.pop("generator.json")  # records --workers and the folder
    assert one == two


def test_resume_equals_uninterrupted_run(tmp_path):
    full = tmp_path / "full"
    synth.generate_dataset(dataset_args(full), tiny_render, kind="tiny", bit_depth=16)
    part = tmp_path / "part"
    shutil.copytree(full, part)
    (part / "train" / "img" / "00001.tif").unlink()  # interrupted before the image was renamed
    (part / "val" / "img" / "00005.tif").unlink()
    (part / "val" / "mask" / "00005.npy").unlink()
    (part / "val" / "mask" / "00005.csv").unlink()
    (part / "train" / "img" / ".00003.part123.tif").write_bytes(b"half")  # a leftover temporary
    (part / "train" / "img" / "00004.tif").write_bytes(b"stale, must be kept")  # complete -> not redone
    assert synth.generate_dataset(dataset_args(part), tiny_render, kind="tiny", bit_depth=16) == 2
    assert synth.generate_dataset(dataset_args(part, "--resume"), tiny_render, kind="tiny", bit_depth=16) == 0
    got, want = files_of(part), files_of(full)
    assert got.pop("train/img/00004.tif") == b"stale, must be kept"
    want.pop("train/img/00004.tif")
    got.pop("train/img/.00003.part123.tif")
    meta_got, meta_want = (json.loads(d.pop("generator.json"))["parameters"] for d in (got, want))
    assert {k: v for k, v in meta_got.items() if k not in synth.RUN_CONTROL} == \
        {k: v for k, v in meta_want.items() if k not in synth.RUN_CONTROL}
    assert got == want


def test_resume_refuses_other_settings_and_overwrite_replaces(tmp_path, capsys):
    out = tmp_path / "d"
    synth.generate_dataset(dataset_args(out), tiny_render, kind="tiny", bit_depth=16)
    code = synth.generate_dataset(dataset_args(out, "--resume", "--seed", "9"), tiny_render, kind="tiny",
                                  bit_depth=16)
    assert code == 2 and "seed" in capsys.readouterr().err
    before = (out / "train" / "img" / "00000.tif").read_bytes()
    assert synth.generate_dataset(dataset_args(out, "--overwrite", "--seed", "9"), tiny_render, kind="tiny",
                                  bit_depth=16) == 0
    assert (out / "train" / "img" / "00000.tif").read_bytes() != before
    assert json.loads((out / "generator.json").read_text())["seed"] == 9


def test_preview_written(tmp_path):
    out = tmp_path / "d"
    synth.generate_dataset(dataset_args(out, "--preview"), tiny_render, kind="tiny", bit_depth=16)
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
