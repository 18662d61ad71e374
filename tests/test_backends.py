"""Fast paths of predict.Segmenter: small planes of a stack share forward passes, and the fp32 CPU backends
(ONNX Runtime, PyTorch channels_last) agree with the plain PyTorch network."""
import numpy as np
import pytest
import torch

from synseg.segment import predict
from synseg import tasks
from synseg.segment import tiling
from tests.test_predict import sharp_model

CPU = torch.device("cpu")
SPEC = {"mode": "percentile", "low": 1.0, "high": 99.8}


def movie(n=7, shape=(44, 52), seed=0):
    """uint16 frames of moving blobs of different brightness (each frame gets its own normalisation)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        x = ndimage.gaussian_filter(rng.normal(size=shape), 2.0) * 400 * (1 + k) + 1000
        frames.append(np.clip(x, 0, 65535).astype(np.uint16))
    return np.stack(frames)


@pytest.mark.parametrize("factor", [1.0, 0.7])
def test_stacked_planes_equal_one_plane_at_a_time(factor):
    net = tiling.prepare_model(sharp_model(), CPU)
    planes = movie()
    assert tiling.planes_per_pass(planes.shape[1:], factor, 256, 1, net.depth) >= len(planes)
    stacked = tiling.stack_probability(net, list(planes), factor, SPEC, device=CPU)
    for plane, got in zip(planes, stacked):
        ref = tiling.plane_probability(net, plane, factor, SPEC, tile_size=64, overlap=16, batch_size=1, device=CPU)
        assert got.shape == ref.shape == plane.shape and got.dtype == ref.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=1e-5)
        np.testing.assert_array_equal(got > 0.5, ref > 0.5)


def test_planes_per_pass_only_for_planes_that_fit_one_tile():
    assert tiling.planes_per_pass((256, 256), 1.0, 1024, 1, 3) == 16
    assert tiling.planes_per_pass((250, 250), 1.0, 1024, 1, 3) == 16  # padded to 256
    assert tiling.planes_per_pass((1030, 100), 1.0, 1024, 1, 3) == 0  # needs two tiles
    assert tiling.planes_per_pass((2000, 2000), 0.5, 1024, 1, 3) == 1  # fits once resized


def test_segmenter_stacks_frames_and_gives_the_same_masks(monkeypatch):
    info = {"model_args": sharp_model().model_args, "normalization": SPEC}
    planes = movie(9, (32, 32))
    planes[3] = 7  # a constant frame is skipped, not sent through the network
    live = [k for k in range(len(planes)) if k != 3]
    maps = {}
    for stack in (False, True):
        opts = predict.Options(tile_size=64, batch_size=1, backend="torch", stack_planes=stack)
        seg = predict.Segmenter(sharp_model(), info, tasks.TASKS["vesicle"], opts, CPU)
        calls = []
        original = tiling.forward_tiles
        monkeypatch.setattr(tiling, "forward_tiles", lambda *a, **k: calls.append(len(a[1])) or original(*a, **k))
        maps[stack] = list(seg.probabilities(planes, live, 1.0, progress=False))
        monkeypatch.setattr(tiling, "forward_tiles", original)
        assert calls == ([4, 4] if stack else [1] * len(live))  # 64^2 / 32^2 = 4 frames per pass
    for a, b in zip(maps[False], maps[True]):
        np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_array_equal(a > 0.5, b > 0.5)


@pytest.mark.skipif(not tiling.onnx_available(), reason="onnx / onnxruntime not installed")
def test_onnx_runtime_network_matches_pytorch_on_any_size():
    net = tiling.prepare_model(sharp_model(first_kernel=5), CPU, channels_last=False)
    ort = predict.onnx_network(net, threads=1)
    assert ort.depth == net.depth and not ort.channels_last
    for shape in ((2, 1, 32, 48), (1, 1, 40, 24)):
        x = torch.from_numpy(np.random.default_rng(0).normal(size=shape).astype(np.float32))
        with torch.inference_mode():
            ref = net(x).numpy()
        np.testing.assert_allclose(ort(x).numpy(), ref, atol=1e-4)
    image = movie(1, (90, 70))[0]
    a = tiling.plane_probability(net, image, 1.0, SPEC, tile_size=64, overlap=24, batch_size=2, device=CPU)
    b = tiling.plane_probability(ort, image, 1.0, SPEC, tile_size=64, overlap=24, batch_size=2, device=CPU)
    np.testing.assert_allclose(a, b, atol=1e-5)



@pytest.mark.skipif(not tiling.onnx_available(), reason="onnx / onnxruntime not installed")
def test_onnx_graph_is_exported_once_per_model_and_a_bad_cache_is_passed_over(tmp_path, monkeypatch):
    from synseg import export

    monkeypatch.setenv("SYNSEG_CACHE_DIR", str(tmp_path / "cache"))
    exports = []
    original = export.export_onnx
    monkeypatch.setattr(export, "export_onnx", lambda *a: exports.append(1) or original(*a))
    net = tiling.prepare_model(sharp_model(first_kernel=3), CPU, channels_last=False)
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(1, 1, 32, 32)).astype(np.float32))
    first = predict.onnx_network(net, threads=1)(x).numpy()
    second = predict.onnx_network(net, threads=1)(x).numpy()
    assert len(exports) == 1 and len(list((tmp_path / "cache").glob("*.onnx"))) == 1
    np.testing.assert_array_equal(first, second)
    other = tiling.prepare_model(sharp_model(first_kernel=5), CPU, channels_last=False)
    predict.onnx_network(other, threads=1)
    assert len(exports) == 2 and len(list((tmp_path / "cache").glob("*.onnx"))) == 2  # another model, another file
    for f in (tmp_path / "cache").glob("*.onnx"):
        f.write_bytes(b"not an onnx graph")
    np.testing.assert_array_equal(predict.onnx_network(net, threads=1)(x).numpy(), first)
    assert len(exports) == 3
    monkeypatch.setenv("SYNSEG_CACHE_DIR", "")
    assert predict.onnx_cache_dir() is None
    np.testing.assert_array_equal(predict.onnx_network(net, threads=1)(x).numpy(), first)

def test_segmenter_names_its_path_and_refuses_onnx_off_the_fp32_cpu(monkeypatch):
    info = {"model_args": sharp_model().model_args, "normalization": SPEC}
    record = tasks.TASKS["vesicle"]
    seg = predict.Segmenter(sharp_model(), info, record, predict.Options(backend="torch", precision="fp32"), CPU)
    assert seg.path == "PyTorch cpu fp32, channels_last" and seg.net.channels_last
    auto = predict.Segmenter(sharp_model(), info, record, predict.Options(precision="fp32"), CPU)
    if tiling.onnx_available():
        assert isinstance(auto.net, tiling.OnnxNet) and auto.path.startswith("ONNX Runtime fp32")
    else:
        assert auto.path == seg.path
    with pytest.raises(ValueError, match="fp32 on the CPU only"):
        predict.Segmenter(sharp_model(), info, record, predict.Options(backend="onnx", precision="bf16"), CPU)
    with pytest.raises(ValueError, match="not understood"):
        predict.Segmenter(sharp_model(), info, record, predict.Options(backend="tvm"), CPU)
    monkeypatch.setattr(tiling, "onnx_available", lambda: False)
    with pytest.raises(ValueError, match="requirements-export.txt"):
        predict.Segmenter(sharp_model(), info, record, predict.Options(backend="onnx", precision="fp32"), CPU)
    fallback = predict.Segmenter(sharp_model(), info, record, predict.Options(precision="fp32"), CPU)
    assert fallback.path == "PyTorch cpu fp32, channels_last"
