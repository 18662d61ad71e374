"""export_model.py: bioimage.io packages of tiny models validate and pass bioimageio.core's test run, offline;
ONNX equals PyTorch on odd tiles; bad inputs give their message."""
import os
import socket
import subprocess
import sys
import zipfile
from argparse import Namespace

import numpy as np
import pytest
import tifffile
import torch

import unet
from tests.conftest import ROOT

# bioimageio.spec reads its settings once, at import: keep its cache out of the home folder.
os.environ.setdefault("BIOIMAGEIO_CACHE_PATH", str(ROOT / ".pytest_cache" / "bioimageio"))
onnxruntime = pytest.importorskip("onnxruntime")
bioimageio_spec = pytest.importorskip("bioimageio.spec")
bioimageio_core = pytest.importorskip("bioimageio.core")

from synseg import export as export_model  # noqa: E402


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail a test that opens a network connection (validation must not fetch URLs, DOIs or users)."""
    attempts = []

    def refuse(sock, address):
        attempts.append(address)
        raise OSError(f"network access refused in tests: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield
    assert not attempts, f"tried to reach the network: {attempts}"


def tiny_checkpoint(path, task="vesicle", normalization=None, first_kernel=3, pixel_size_um=0.1):
    """A base-4, depth-2 checkpoint with non-trivial batch-norm statistics, as training would leave it."""
    torch.manual_seed(0)
    model = unet.build_model(in_channels=1, out_channels=1, base_channels=4, depth=2, first_kernel=first_kernel,
                             dropout=0.0, batch_norm=True)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    normalization = normalization or {"mode": "percentile", "low": 1.0, "high": 99.8}
    train_args = {"epochs": 1, "batch_size": 2, "crop_size": 32, "lr": 1e-3, "loss": "bce+dice"}
    unet.save_checkpoint(path, model, task=task, normalization=normalization, pixel_size_um=pixel_size_um,
                         train_args=train_args, metrics={"dice": 0.5, "epoch": 1})
    return path


def package_args(**kw):
    """The namespace export_model.main would pass to write_package."""
    base = dict(test_size=64, test_image=None, seed=0, author=["Test Author"], license="MIT", format="bioimageio")
    base.update(kw)
    return Namespace(**base)


def read_rdf(zip_path):
    """The package's rdf.yaml as a dict (bioimageio.spec ships a YAML reader)."""
    from bioimageio.spec.utils import read_yaml

    with zipfile.ZipFile(zip_path) as zf:
        name = next(n for n in zf.namelist() if n in ("rdf.yaml", "bioimageio.yaml"))
        return read_yaml(zf.read(name).decode("utf-8"))


@pytest.fixture(scope="module")
def vesicle_package(tmp_path_factory):
    """One exported package of a tiny percentile-normalised vesicle model, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("vesicle")
    ckpt = tiny_checkpoint(tmp / "tiny.pth")
    out = tmp / "tiny.zip"
    diffs = export_model.write_package(ckpt, out, package_args())
    return ckpt, out, diffs


def test_package_validates_with_bioimageio_spec(vesicle_package):
    _, out, _ = vesicle_package
    summary = export_model.validate(out)
    assert summary.status == "valid-format", summary.format()
    assert summary.format_version.startswith("0.5")


def test_package_test_run_passes_with_bioimageio_core(vesicle_package):
    _, out, _ = vesicle_package
    summary = export_model.core_test(out)
    assert summary.status == "passed", summary.format()
    tested = {d.loc[1] for d in summary.details if len(d.loc) > 1 and d.loc[0] == "weights"}
    assert tested == {"pytorch_state_dict", "torchscript", "onnx"}


def test_package_describes_the_checkpoint(vesicle_package):
    ckpt, out, diffs = vesicle_package
    _, info = unet.load_model(ckpt)
    rdf = read_rdf(out)
    assert rdf["format_version"].startswith("0.5")
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"] == info["model_args"]
    (inp,), (outp,) = rdf["inputs"], rdf["outputs"]
    pre = [p for p in inp["preprocessing"] if p["id"] != "ensure_dtype"]
    assert pre == [{"id": "scale_range", "kwargs": {"axes": ["y", "x"], "min_percentile": 1.0,
                                                    "max_percentile": 99.8}}]
    assert [p["id"] for p in outp["postprocessing"] if p["id"] != "ensure_dtype"] == ["sigmoid"]
    y_in, y_out = inp["axes"][2], outp["axes"][2]
    assert (y_in["scale"], y_in["unit"]) == (100.0, "nanometer")  # 0.1 um/px
    assert y_in["size"]["step"] == 4 and y_in["size"]["min"] > 2 * unet.receptive_radius(info["model_args"])
    radius = unet.receptive_radius(info["model_args"])
    assert radius <= y_out["halo"] < radius + 4 and y_out["halo"] % 4 == 0  # on the 2**depth pooling grid
    assert rdf["license"] == "MIT" and rdf["cite"][0]["doi"] and rdf["covers"]
    assert rdf["config"]["synseg"]["normalization"] == info["normalization"]
    with zipfile.ZipFile(out) as zf:
        readme = zf.read(rdf["documentation"]["source"] if isinstance(rdf["documentation"], dict)
                         else rdf["documentation"]).decode()
        test_in = np.load(zf.open("test_input.npy"))
        test_out = np.load(zf.open("test_output.npy"))
    assert "vesicle" in readme and "0.5" in readme and "Validation" in readme
    assert test_in.shape == test_out.shape == (1, 1, 64, 64)
    assert 0.0 <= test_out.min() and test_out.max() <= 1.0
    assert max(diffs.values()) <= 1e-4


def test_standardize_becomes_zero_mean_unit_variance_and_the_test_run_reproduces_it(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "cyto.pth", task="cytoskeleton", normalization={"mode": "standardize"},
                           first_kernel=5, pixel_size_um=0.065)
    out = tmp_path / "cyto.zip"
    export_model.write_package(ckpt, out, package_args())
    rdf = read_rdf(out)
    pre = [p for p in rdf["inputs"][0]["preprocessing"] if p["id"] != "ensure_dtype"]
    assert [p["id"] for p in pre] == ["zero_mean_unit_variance"]
    assert rdf["inputs"][0]["axes"][3]["scale"] == 65.0 and rdf["config"]["synseg"]["pixel_size_um"] == 0.065
    summary = bioimageio_core.test_model(out, weight_format="pytorch_state_dict", devices=["cpu"])
    assert summary.status == "passed", summary.format()


LOCAL = {"mode": "local", "radius": 7.0, "sigma": 4.0, "compress": "asinh"}  # the shipped models' rule


def test_local_contrast_in_the_graph_equals_normalize_image():
    """export_graph.LocalContrast (torch ops) gives normalization.normalize_image's values and noise model, on a
    generator image, a zero-clipped (background-subtracted) one and a plane big enough for the strided fit."""
    from synseg import normalization
    from synseg.export_graph import LocalContrast, noise_model_of
    from synseg.napari import _sample

    image = _sample.synthetic("vesicle", size=96, seed=4)[0]
    clipped = np.clip(image.astype(np.float32) - np.percentile(image, 60), 0, None)
    big = np.random.default_rng(0).poisson(50, (1030, 1030)).astype(np.uint16)  # > 2^20 px: noise fit on ::2
    for img in (image, clipped, big):
        want = normalization.noise_model(img, LOCAL)
        got = noise_model_of(img, LOCAL)
        for key in ("alpha", "beta", "floor"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-9), key
    for img in (image, clipped):
        with torch.inference_mode():
            got = LocalContrast(LOCAL)(torch.from_numpy(img.astype(np.float32))[None, None])[0, 0].numpy()
        assert np.abs(got - normalization.normalize_image(img, LOCAL)).max() < 1e-5
    with torch.inference_mode():  # a constant image normalises to zeros, as normalize_image does
        flat = LocalContrast(LOCAL)(torch.full((1, 1, 40, 40), 7.0))
    assert float(flat.abs().max()) == 0.0


def test_local_contrast_model_packages_with_its_normalisation_inside(tmp_path):
    """A 'local' checkpoint (the shipped models' rule) exports: no preprocessing, TorchScript and ONNX weights
    that read the raw image, bioimageio.core's test passes, and the graph equals SynSeg's normalisation."""
    ckpt = tiny_checkpoint(tmp_path / "local.pth", normalization=dict(LOCAL))
    out = tmp_path / "local.zip"
    diffs = export_model.write_package(ckpt, out, package_args())
    rdf = read_rdf(out)
    assert set(rdf["weights"]) == {"torchscript", "onnx"}
    assert [p for p in rdf["inputs"][0]["preprocessing"] if p["id"] != "ensure_dtype"] == []
    assert diffs["graph on the padded image vs SynSeg (probability, > halo from the edge)"] < 1e-4
    assert export_model.validate(out).status == "valid-format"
    summary = export_model.core_test(out)
    assert summary.status == "passed", summary.format()
    # a consumer's prediction (bioimageio.core pads the image by the halo) equals SynSeg's own path away from
    # the border: the noise is fitted to the image itself, not to the padding
    from bioimageio.core import create_prediction_pipeline, load_model_description, predict
    from bioimageio.core.tensor import Tensor
    from synseg.napari import _sample

    image = _sample.synthetic("vesicle", size=150, seed=6)[0].astype(np.float32)[:, :141]
    model, info = unet.load_model(ckpt)
    want = export_model.probability(model, image, info["normalization"])  # SynSeg's normalisation and network
    for fmt in ("onnx", "torchscript"):
        pipeline = create_prediction_pipeline(load_model_description(out, perform_io_checks=False),
                                              weight_format=fmt, devices=["cpu"])
        got = predict(model=pipeline, inputs={"raw": Tensor(image[None, None], dims=("batch", "channel", "y", "x"))})
        got = np.asarray(got.members["probability"].data.values)[0, 0]
        halo = export_model.size_hints(info["model_args"])[0]
        assert got.shape == want.shape
        assert np.abs(got - want)[halo:-halo, halo:-halo].max() < 1e-4, fmt


def test_onnx_alone_equals_pytorch_on_an_odd_tile(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny.pth")
    out = tmp_path / "tiny.onnx"
    run = subprocess.run([sys.executable, str(ROOT / "export_model.py"), str(ckpt), "-o", str(out),
                          "--format", "onnx"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert "onnx" in run.stdout
    model, _ = unet.load_model(ckpt)
    x = np.random.default_rng(1).normal(size=(2, 1, 37, 53)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape == (2, 1, 37, 53)
    assert np.abs(got - want).max() <= 1e-4


def test_cli_writes_a_package_with_a_given_test_image(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny.pth")
    image = np.random.default_rng(2).integers(0, 4000, (70, 81)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "cell.tif", image)
    out = tmp_path / "pkg.zip"
    cmd = [sys.executable, str(ROOT / "export_model.py"), str(ckpt), "-o", str(out), "--test-size", "60",
           "--test-image", str(tmp_path / "cell.tif")]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert "valid-format" in run.stdout and out.is_file()
    with zipfile.ZipFile(out) as zf:
        test_in = np.load(zf.open("test_input.npy"))
    assert test_in.shape == (1, 1, 60, 60)  # 60 = 52 + 2 steps of 4: allowed as it is
    np.testing.assert_array_equal(test_in[0, 0], image[5:65, 10:70])
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_bad_inputs_give_their_message(tmp_path, capsys):
    def main(*argv):
        code = export_model.main(export_model.get_args_parser().parse_args([str(a) for a in argv]))
        return code, capsys.readouterr().err

    ckpt = tiny_checkpoint(tmp_path / "median.pth", normalization={"mode": "median", "target": 500.0})
    code, err = main(ckpt, "-o", tmp_path / "m.zip")
    assert code == 1 and "no bioimage.io equivalent" in err and not (tmp_path / "m.zip").exists()
    code, err = main(ckpt, "-o", tmp_path / "m.onnx")
    assert code == 2 and ".zip" in err
    code, err = main(tmp_path / "missing.pth", "-o", tmp_path / "x.zip")
    assert code == 1 and "not found" in err
    good = tiny_checkpoint(tmp_path / "good.pth")
    code, err = main(good, "-o", tmp_path / "x.zip", "--test-image", tmp_path / "none.tif")
    assert code == 2 and "none.tif" in err
    flat = tmp_path / "small.tif"
    tifffile.imwrite(flat, np.zeros((20, 30), np.uint16))
    code, err = main(good, "-o", tmp_path / "x.zip", "--test-image", flat)
    assert code == 1 and "smaller than the test tile" in err


def test_size_hints_cover_the_halo():
    for args in ({"depth": 2, "first_kernel": 3}, {"depth": 3, "first_kernel": 5}):
        halo, minimum, step = export_model.size_hints(args)
        assert step == 2 ** args["depth"] and halo % step == 0 and minimum % step == 0 and minimum > 2 * halo
        assert halo >= unet.receptive_radius(args)
        assert export_model.valid_size(minimum - 5, minimum, step) == minimum
        assert export_model.valid_size(minimum + 1, minimum, step) == minimum + step


def test_shipped_models_carry_their_scores_from_models_readme(tmp_path):
    rows = export_model.shipped_scores(ROOT / "models" / "vesicle.pth", "vesicle")
    assert rows[0].startswith("| task |") and any(r.startswith("| vesicle |") for r in rows)
    assert not any(r.startswith("| cytoskeleton |") for r in rows)
    assert export_model.shipped_scores(tmp_path / "vesicle.pth", "vesicle") == []
