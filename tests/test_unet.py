"""unet.py: shapes, receptive radius, checkpoint round trip, original weights, refusal of pickled code, devices,
the module docstring's example."""
import pickle
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch

from synseg import normalization
import unet
from tests.conftest import ROOT


@pytest.mark.parametrize("h,w", [(37, 53), (16, 16), (9, 130), (5, 5)])
def test_output_shape_equals_input_for_odd_sizes(h, w):
    model = unet.build_model(base_channels=4, depth=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, h, w))
    assert out.shape == (2, 1, h, w)


def test_first_kernel_and_dropout_configurable():
    model = unet.build_model(base_channels=4, depth=2, first_kernel=5, dropout=0.2, batch_norm=False)
    assert model.enc1[0].kernel_size == (5, 5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model(torch.randn(1, 1, 20, 20)).shape == (1, 1, 20, 20)


@pytest.mark.parametrize("depth,first_kernel", [(1, 3), (2, 3), (2, 5)])
def test_receptive_radius_matches_autograd(depth, first_kernel):
    torch.manual_seed(0)
    model = unet.build_model(base_channels=4, depth=depth, first_kernel=first_kernel).eval().double()
    size, reach = 96, 0
    for off in range(2 ** depth):  # the reach depends on the position in the pooling grid
        x = torch.randn(1, 1, size, size, dtype=torch.float64, requires_grad=True)
        c = size // 2 + off
        model(x)[0, 0, c, c].backward()
        ys, xs = torch.nonzero(x.grad[0, 0] != 0, as_tuple=True)
        reach = max(reach, int((ys - c).abs().max()), int((xs - c).abs().max()))
    assert unet.receptive_radius(model.model_args) == reach


def test_docstring_example_runs(tmp_path, monkeypatch):
    """The indented example at the top of unet.py, run as written in a scratch folder."""
    code = "\n".join(line[4:] for line in unet.__doc__.splitlines() if line.startswith("    "))
    assert "save_checkpoint" in code and "load_model" in code
    monkeypatch.chdir(tmp_path)
    scope = dict(vars(unet))
    exec(code, scope)
    assert (tmp_path / "m.pth").is_file()
    assert scope["info"]["task"] == "cytoskeleton" and scope["info"]["model_args"]["first_kernel"] == 5


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = unet.build_model(base_channels=4, depth=2, first_kernel=5).eval()
    with torch.no_grad():  # make BN statistics non-trivial
        model.enc1[1].running_mean.uniform_(-0.5, 0.5)
    x = torch.randn(1, 1, 24, 31)
    path = tmp_path / "m.pth"
    unet.save_checkpoint(path, model, task="cytoskeleton", normalization={"mode": "standardize"},
                         pixel_size_um=0.1, train_args={"out": tmp_path}, metrics={"dice": 0.9})
    loaded, info = unet.load_model(path)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert info["task"] == "cytoskeleton"
    assert info["pixel_size_um"] == pytest.approx(0.1)
    assert info["model_args"]["first_kernel"] == 5
    assert info["metrics"]["dice"] == pytest.approx(0.9)
    assert info["train_args"]["out"] == str(tmp_path)


def test_half_export_is_smaller_and_predicts_the_same(tmp_path):
    torch.manual_seed(1)
    model = unet.build_model(base_channels=8, depth=2).eval()
    full, half = tmp_path / "full.pth", tmp_path / "half.pth"
    unet.save_checkpoint(full, model, task="vesicle", normalization={"mode": "percentile"})
    unet.export_half(full, half)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, info = unet.load_model(half)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        a, b = torch.sigmoid(model(x)), torch.sigmoid(loaded(x))
    assert next(loaded.parameters()).dtype == torch.float32
    assert (a - b).abs().max() < 5e-3 and info["task"] == "vesicle"


def _original_state_dict(first_kernel):
    """A state dict with exactly the original SynSeg key layout and shapes (base 64, depth 3)."""
    sd = OrderedDict()

    def block(name, cin, cout, k):
        sd[f"{name}.0.weight"] = torch.randn(cout, cin, k, k) * 0.05
        sd[f"{name}.0.bias"] = torch.zeros(cout)
        for i in (1, 4):
            sd[f"{name}.{i}.weight"] = torch.ones(cout)
            sd[f"{name}.{i}.bias"] = torch.zeros(cout)
            sd[f"{name}.{i}.running_mean"] = torch.zeros(cout)
            sd[f"{name}.{i}.running_var"] = torch.ones(cout)
            sd[f"{name}.{i}.num_batches_tracked"] = torch.tensor(0)
        sd[f"{name}.3.weight"] = torch.randn(cout, cout, 3, 3) * 0.05
        sd[f"{name}.3.bias"] = torch.zeros(cout)

    block("enc1", 1, 64, first_kernel)
    block("enc2", 64, 128, first_kernel)
    block("enc3", 128, 256, first_kernel)
    block("bottleneck", 256, 512, first_kernel)
    for i, (cin, cout) in zip((3, 2, 1), ((512, 256), (256, 128), (128, 64))):
        sd[f"up{i}.weight"] = torch.randn(cin, cout, 2, 2) * 0.05
        sd[f"up{i}.bias"] = torch.zeros(cout)
        block(f"dec{i}", 2 * cout, cout, first_kernel)
    sd["final.weight"] = torch.randn(1, 64, 1, 1) * 0.05
    sd["final.bias"] = torch.zeros(1)
    return sd


@pytest.mark.parametrize("k,task", [(3, "vesicle"), (5, "cytoskeleton")])
def test_original_state_dict_loads_and_predicts(tmp_path, k, task):
    path = tmp_path / "orig.pth"
    torch.save(_original_state_dict(k), path)
    model, info = unet.load_model(path)
    assert info["task"] == task
    assert info["model_args"]["base_channels"] == 64 and info["model_args"]["depth"] == 3
    with torch.no_grad():
        out = model(torch.randn(1, 1, 40, 40))
    assert out.shape == (1, 1, 40, 40) and torch.isfinite(out).all()


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": _Evil(), "model_args": {}}, fh)
    with pytest.raises(ValueError, match=r"evil\.pth.*refused"):
        unet.load_model(path)


def test_garbage_file_is_named(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=r"junk\.pth"):
        unet.load_model(path)


def test_cuda_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError, match="CUDA is not available.*--device cpu"):
        unet.get_device("cuda")
    assert unet.get_device("cpu").type == "cpu"
    assert unet.get_device("auto", verbose=False).type in ("cpu", "mps")


@pytest.mark.parametrize("mode", ["standardize", "percentile"])
def test_normalisation_is_brightness_invariant_and_float32(mode):
    rng = np.random.default_rng(0)
    img = rng.gamma(2.0, 100.0, size=(32, 32)).astype(np.float32)
    a = normalization.normalize_image(img, {"mode": mode})
    b = normalization.normalize_image(img * 100.0, {"mode": mode})
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert a.dtype == np.float32 and b.dtype == np.float32  # the network's weights are float32
    assert not np.any(normalization.normalize_image(np.full((8, 8), 7.0), {"mode": mode}))


@pytest.mark.parametrize("script", ["Vesicle_generator.py", "Cytoskeleton_generator.py", "train_vesicle_seg.py",
                                    "train_cytoskeleton_seg.py", "SynSeg_Vesicle.py", "SynSeg_Cytoskeleton.py"])
def test_every_script_has_help(script):
    res = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "usage" in res.stdout.lower()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
@pytest.mark.parametrize("mode", ["standardize", "percentile", "median", "minmax255"])
def test_integer_images_normalise_through_a_histogram_as_through_float32(dtype, mode):
    img = np.random.default_rng(0).gamma(2.0, 60.0, size=(70, 93)).astype(dtype)
    spec = {"mode": mode}
    exact = normalization.normalization_stats(img, spec)  # counted in a histogram, no float copy
    plain = normalization.normalization_stats(img.astype(np.float32), spec)
    assert exact.keys() == plain.keys()
    for key in exact:
        assert exact[key] == pytest.approx(plain[key], rel=1e-6)
    crop = img[10:40, 20:70]  # a tile, normalised with the whole image's statistics
    np.testing.assert_allclose(normalization.apply_normalization(crop, spec, exact),
                               normalization.normalize_image(img.astype(np.float32), spec)[10:40, 20:70], rtol=1e-5,
                               atol=1e-5)
