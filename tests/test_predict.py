"""predict.py: tiling layout and windows, tiled == whole-image, thresholds, vesicle split,
skeleton measurements, plane handling."""
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from synseg import normalization
from synseg.segment import postprocess
from synseg.segment import predict
from synseg.segment import tiling
import unet


def sharp_model(base=4, depth=2, first_kernel=3, seed=0, size=(96, 96)):
    """Random U-Net whose output really depends on the input (He init, logits of std ~2), in fp32.

    With PyTorch's default init a random U-Net gives an almost constant map, which would let a wrong
    tiler pass; this one has a probability map spread over (0, 1) and the full receptive field in use.
    """
    torch.manual_seed(seed)
    model = unet.build_model(base_channels=base, depth=depth, first_kernel=first_kernel).eval()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
                mod.bias.uniform_(-0.1, 0.1)
            elif isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
        logits = model(torch.from_numpy(smooth_noise(size, seed=seed + 1))[None, None])
        model.final.weight /= float(logits.std()) / 2.0
    return model


def smooth_noise(shape, seed=0, sigma=2.0):
    """Standardised smoothed Gaussian noise (float32)."""
    x = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma)
    return ((x - x.mean()) / x.std()).astype(np.float32)


@pytest.mark.parametrize("length,tile,overlap,align", [(512, 256, 72, 8), (200, 64, 40, 4), (64, 256, 40, 4),
                                                       (2048, 768, 168, 8), (1000, 100, 8, 8)])
def test_tile_layout_covers_aligned_with_overlap(length, tile, overlap, align):
    t, starts = tiling.tile_layout(length, tile, overlap, align)
    assert t % align == 0 and all(s % align == 0 for s in starts)
    assert starts[0] == 0 and starts[-1] + t == length
    assert t <= max(-(-tile // align) * align, overlap + align) or len(starts) == 1
    if len(starts) > 1:
        assert min(starts[i] + t - starts[i + 1] for i in range(len(starts) - 1)) >= overlap


def test_auto_tile_size_follows_network_width_on_the_cpu():
    args64 = {"base_channels": 64, "depth": 3}
    t64 = tiling.auto_tile_size(args64, "cpu")
    assert t64 % 8 == 0 and 600 <= t64 < 1024
    # the activations of one tile stay within the CPU budget
    assert t64 ** 2 * tiling.ACTIVATION_BYTES * 64 <= tiling.CPU_TILE_BUDGET
    t32 = tiling.auto_tile_size({"base_channels": 32, "depth": 3}, "cpu")
    assert t64 < t32 < tiling.auto_tile_size({"base_channels": 8, "depth": 4}, "cpu") <= tiling.MAX_CPU_TILE
    assert t32 ** 2 * tiling.ACTIVATION_BYTES * 32 <= tiling.CPU_TILE_BUDGET
    assert tiling.auto_tile_size(args64, "cuda") == tiling.MAX_TILE


def test_tile_layout_rejects_overlap_not_smaller_than_tile():
    with pytest.raises(ValueError, match="larger than the overlap"):
        tiling.tile_layout(512, 64, 64, 8)


def test_windows_are_positive_and_hand_over_smoothly():
    t, starts = tiling.tile_layout(400, 128, 56, 8)
    windows = tiling.tile_windows(t, starts)
    total = np.zeros(400, np.float32)
    for s, w in zip(starts, windows):
        assert w.min() > 0
        total[s:s + t] += w
    # Neighbouring profiles add up to one (plus the tiny halo floor): no seams in the blend.
    np.testing.assert_allclose(total, 1.0, atol=2e-6)
    # The pixels next to an inner tile edge (the halo) hardly count.
    assert windows[1][0] < 1e-5 and windows[0][-1] < 1e-5
    # At the image border there is no neighbour: full weight.
    assert windows[0][0] == 1.0 and windows[-1][-1] == 1.0


@pytest.mark.parametrize("shape,tile", [((157, 203), 96), ((96, 170), 80), ((37, 300), 72)])
def test_tiled_equals_whole_image(shape, tile):
    model = sharp_model()
    net = tiling.prepare_model(model, torch.device("cpu"))
    image = smooth_noise(shape, seed=3)
    whole = tiling.predict_probability(net, image, tile_size=4096, overlap=0)
    with torch.no_grad():  # the whole-image reference straight from the unfolded network
        ref = torch.sigmoid(model(torch.from_numpy(image)[None, None]))[0, 0].numpy()
    assert whole.std() > 0.1  # a map that varies, so agreement means something
    np.testing.assert_allclose(whole, ref, atol=1e-5)
    overlap = tiling.default_overlap(model.model_args)
    tiled = tiling.predict_probability(net, image, tile_size=tile, overlap=overlap, batch_size=3)
    t, starts = tiling.tile_layout(-(-shape[1] // 4) * 4, tile, overlap, 4)
    assert len(starts) > 1  # really tiled
    assert tiled.shape == shape and tiled.dtype == np.float32
    assert np.abs(tiled - whole).max() < 1e-3


def test_small_overlap_is_visibly_worse():
    """The default overlap is what makes tiling exact: a quarter of it leaves seams."""
    model = sharp_model()
    net = tiling.prepare_model(model, torch.device("cpu"))
    image = smooth_noise((160, 160), seed=4)
    whole = tiling.predict_probability(net, image, tile_size=4096, overlap=0)
    tiled = tiling.predict_probability(net, image, tile_size=64, overlap=16)
    assert np.abs(tiled - whole).max() > 1e-2


def test_tta_tiled_equals_tta_whole_and_differs_from_plain():
    model = sharp_model()
    net = tiling.prepare_model(model, torch.device("cpu"))
    image = smooth_noise((120, 136), seed=5)
    plain = tiling.predict_probability(net, image, tile_size=4096, overlap=0)
    whole = tiling.predict_probability(net, image, tile_size=4096, overlap=0, tta=True)
    tiled = tiling.predict_probability(net, image, tile_size=96, overlap=tiling.default_overlap(model.model_args),
                                        tta=True, batch_size=2)
    assert np.abs(tiled - whole).max() < 1e-3
    assert np.abs(plain - whole).max() > 1e-3


@pytest.mark.parametrize("shape", [(5, 7), (1, 1), (3, 40)])
def test_images_smaller_than_a_tile_or_the_pooling_grid(shape):
    net = tiling.prepare_model(sharp_model(), torch.device("cpu"))
    image = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    prob = tiling.predict_probability(net, image, tile_size=64, overlap=40)
    assert prob.shape == shape and np.all((prob >= 0) & (prob <= 1))


def test_fold_batchnorm_keeps_the_function():
    model = sharp_model(first_kernel=5)
    x = torch.from_numpy(smooth_noise((40, 48)))[None, None]
    folded = tiling.fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)


def test_threshold_parsing_and_otsu():
    assert postprocess.parse_threshold("0.3") == "0.3"
    assert postprocess.parse_threshold("OTSU") == "otsu"
    for bad in ("1.5", "0", "high"):
        with pytest.raises(Exception, match="threshold"):
            postprocess.parse_threshold(bad)
    prob = np.concatenate([np.full(500, 0.1), np.full(500, 0.7)]).astype(np.float32).reshape(20, 50)
    t = postprocess.resolve_threshold(prob, "otsu")
    assert 0.1 <= t < 0.7
    assert postprocess.resolve_threshold(np.full((8, 8), 0.3, np.float32), "otsu") == 0.5
    assert postprocess.resolve_threshold(prob, "0.25") == 0.25


def discs(centres, r=6, shape=(60, 90)):
    """Mask of discs of radius r and an image with a Gaussian peak at each centre."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    mask = np.zeros(shape, bool)
    image = np.zeros(shape, np.float32)
    for cy, cx in centres:
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        mask |= d2 <= r * r
        image += 1000 * np.exp(-d2 / (2 * (r / 2) ** 2))
    return mask, image


def test_split_touching_separates_touching_vesicles_with_a_line():
    # a touching pair (centres 10 px apart, radius 6) and three isolated vesicles
    mask, image = discs([(20, 17), (20, 27), (45, 15), (45, 45), (20, 70)])
    assert postprocess.label8(mask)[1] == 4
    split = postprocess.split_touching(mask, image)
    assert postprocess.label8(split)[1] == 5  # 8-connected components = vesicles
    lost = np.count_nonzero(mask & ~split)
    assert 0 < lost <= 2 * 13  # only a thin line between the pair is given up
    assert not np.any(split & ~mask)
    assert postprocess.label8(postprocess.split_touching(mask, image, min_distance=12))[1] == 4  # seeds merged


def test_split_leaves_single_vesicles_and_empty_masks_alone():
    yy, xx = np.mgrid[:40, :40]
    d2 = (yy - 20) ** 2 + (xx - 20) ** 2
    mask = d2 <= 49
    image = (1000 * np.exp(-d2 / 18.0) + np.random.default_rng(0).normal(0, 5, d2.shape)).astype(np.float32)
    np.testing.assert_array_equal(postprocess.split_touching(mask, image), mask)
    empty = np.zeros((10, 10), bool)
    assert not postprocess.split_touching(empty, np.zeros((10, 10))).any()


def test_split_lines_follow_the_generators_rule(monkeypatch):
    """The gap between split vesicles is metrics.separate_touching's, as in the generator: the smaller label wins."""
    from synseg import metrics

    calls = []

    def spy(labels):
        calls.append((labels.copy(), metrics_rule(labels)))
        return calls[-1][1]

    metrics_rule = metrics.separate_touching
    monkeypatch.setattr(metrics, "separate_touching", spy)
    mask, image = discs([(20, 17), (20, 27)])
    split = postprocess.split_touching(mask, image)
    assert len(calls) == 1
    parts, kept = calls[0]
    assert parts.max() == 2
    removed = (parts > 0) & (kept == 0)
    assert removed.any() and np.all(parts[removed] == 2)  # the larger label gives up the line
    assert np.count_nonzero(mask & ~split) == np.count_nonzero(removed)


def test_object_table_centroids_and_areas():
    labels = np.zeros((20, 20), np.int32)
    labels[2:5, 3:6] = 1  # 9 px around (3, 4)
    labels[10:12, 10:14] = 2  # 8 px around (10.5, 11.5)
    image = np.full((20, 20), 7.0)
    rows = postprocess.object_table(labels, image)
    assert [r["area_px"] for r in rows] == [9, 8]
    assert rows[0]["centroid_y"] == pytest.approx(3.0) and rows[1]["centroid_x"] == pytest.approx(11.5)
    assert rows[1]["mean_intensity"] == pytest.approx(7.0)


def test_skeleton_length_and_junctions():
    line = np.zeros((30, 60), bool)
    line[14:17, 5:55] = True  # a 3-px thick horizontal bar, ~50 px long
    length, junctions = postprocess.skeleton_stats(line)
    assert 44 <= length <= 52 and junctions == 0
    yy, xx = np.mgrid[:40, :40]
    diag = (np.abs(yy - xx) <= 1) & (yy > 2) & (yy < 38)  # 3-px thick diagonal, 34 steps of sqrt 2
    length, _ = postprocess.skeleton_stats(diag)
    assert length == pytest.approx(34 * math.sqrt(2), rel=0.08)
    cross = np.zeros((61, 61), bool)
    cross[29:32, 5:56] = True
    cross[5:56, 29:32] = True
    length, junctions = postprocess.skeleton_stats(cross)
    assert junctions == 1 and 90 <= length <= 104
    assert postprocess.skeleton_stats(np.zeros((9, 9), bool)) == (0.0, 0)


def test_as_planes_layouts():
    planes, axes = predict.as_planes(np.zeros((3, 20, 30)), "TYX", None, "f")
    assert planes.shape == (3, 20, 30) and axes == "TYX"
    planes, axes = predict.as_planes(np.zeros((2, 3, 20, 30)), "ZCYX", 2, "f")
    assert planes.shape == (2, 20, 30) and axes == "ZYX"
    planes, axes = predict.as_planes(np.arange(20 * 30 * 3).reshape(20, 30, 3), "YXS", 1, "f")
    assert planes.shape == (1, 20, 30) and axes == "YX" and planes[0, 0, 0] == 1
    planes, axes = predict.as_planes(np.zeros((1, 20, 30)), "CYX", None, "f")
    assert planes.shape == (1, 20, 30) and axes == "YX"
    with pytest.raises(ValueError, match=r"f: image has 3 channels \(shape \(20, 30, 3\)"):
        predict.as_planes(np.zeros((20, 30, 3)), "YXS", None, "f")
    with pytest.raises(ValueError, match="--channel 4 out of range"):
        predict.as_planes(np.zeros((3, 20, 30)), "CYX", 4, "f")


def test_check_values_refuses_nan():
    x = np.ones((4, 4), np.float32)
    x[1, 2] = np.nan
    with pytest.raises(ValueError, match="img.tif: 1 NaN"):
        predict.check_values(x, "img.tif")
    assert predict.check_values(np.ones((2, 2), bool), "b").dtype == np.uint8


def test_rescale_factor():
    assert predict.rescale_factor(0.2, 0.1) == pytest.approx(2.0)
    assert predict.rescale_factor(0.101, 0.1) == 1.0  # within tolerance
    assert predict.rescale_factor(None, 0.1) == 1.0 and predict.rescale_factor(0.2, None) == 1.0
    small = tiling.resize_plane(np.arange(64, dtype=np.float32).reshape(8, 8), (4, 4))
    assert small.shape == (4, 4) and small.mean() == pytest.approx(31.5)


@pytest.mark.parametrize("shape", [(37, 53), (5, 7), (1, 1), (64, 64)])
def test_read_tile_is_the_padded_image_cut(shape):
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    h, w = shape
    ph, pw = (-h) % 8, (-w) % 8
    mode = "reflect" if (ph < h and pw < w) else "edge"
    padded = np.pad(image, ((0, ph), (0, pw)), mode=mode)
    H, W = padded.shape
    for y in range(0, H, 8):
        for x in range(0, W, 8):
            t = tiling.read_tile(image, y, x, min(16, H - y), min(24, W - x), mode)
            np.testing.assert_array_equal(t, padded[y:y + 16, x:x + 24])


def test_raw_plane_normalised_tile_by_tile_equals_normalised_first():
    net = tiling.prepare_model(sharp_model(), torch.device("cpu"))
    raw = (np.clip(smooth_noise((150, 131), seed=7), -2, None) * 900 + 2500).astype(np.uint16)
    spec = {"mode": "percentile"}
    first = tiling.predict_probability(net, normalization.normalize_image(raw, spec), tile_size=72, overlap=40)
    stats = normalization.normalization_stats(raw, spec)
    tiled = tiling.predict_probability(net, raw, tile_size=72, overlap=40,
                                        normalize=lambda t: normalization.apply_normalization(t, spec, stats))
    np.testing.assert_array_equal(first, tiled)
    half = tiling.predict_probability(net, raw, tile_size=72, overlap=40, out_dtype=np.float16,
                                       normalize=lambda t: normalization.apply_normalization(t, spec, stats))
    assert half.dtype == np.float16 and np.abs(half.astype(np.float32) - first).max() < 1e-3


def test_cpu_bf16_runs_channels_last_and_batches_only_small_tiles():
    args = {"base_channels": 64, "depth": 3}
    assert tiling.auto_tile_size(args, "cpu", half=True) > tiling.auto_tile_size(args, "cpu")  # bf16: half the bytes
    assert tiling.auto_batch_size(args, "cpu", tiling.auto_tile_size(args, "cpu")) == 1
    assert tiling.auto_batch_size(args, "cpu", 256) == 4 and tiling.auto_batch_size(args, "cuda", 1024) == 4
    net = tiling.prepare_model(sharp_model(), torch.device("cpu"), channels_last=True)
    assert net.channels_last and net.enc1[0].weight.is_contiguous(memory_format=torch.channels_last)
    image = smooth_noise((120, 100), seed=2)
    ref = tiling.predict_probability(tiling.prepare_model(sharp_model(), torch.device("cpu")), image,
                                      tile_size=4096, overlap=0)
    got = tiling.predict_probability(net, image, tile_size=64, overlap=40, batch_size=3, amp_dtype=torch.bfloat16)
    assert np.abs(got - ref).max() < 0.05  # bf16 rounding only


def test_label_windows_give_the_whole_plane_objects_in_order():
    from synseg.segment import spots

    rng = np.random.default_rng(1)
    for trial in range(20):
        mask = rng.random((300, 70)) < rng.uniform(0.3, 0.62)  # long, winding objects across windows
        whole, n = postprocess.label8(mask)
        got, k = np.zeros_like(whole), 0
        for y0, labels, first, last in spots.label_windows(mask, margin=int(rng.integers(0, 5)),
                                                            rows=int(rng.integers(1, 50))):
            own = (labels >= first) & (labels <= last)
            assert not got[y0:y0 + len(labels)][own].any()  # every object in one window only
            got[y0:y0 + len(labels)][own] = labels[own] - first + 1 + k
            k += last - first + 1
        assert k == n and np.array_equal(got, whole), trial


def test_windowed_split_measure_and_skeleton_equal_the_whole_plane(monkeypatch):
    from synseg.segment import spots
    from tests.test_spots import gaussian_spots

    rng = np.random.default_rng(3)
    centres = [tuple(c) for c in rng.uniform(4, 296, (260, 2))]
    image = gaussian_spots((300, 240), [(y, x * 0.8) for y, x in centres], [3000.0] * 130 + [150.0] * 130,
                           background=500.0, noise=5.0).astype(np.uint16)
    mask = ndimage.binary_dilation(image > 560, iterations=2)
    prob = (image / image.max()).astype(np.float32)
    results = []
    for pixels in (10 ** 9, 240 * 23):  # one window; windows of 23 rows
        monkeypatch.setattr(spots, "WINDOW_PIXELS", pixels)
        split = postprocess.split_touching(mask, image)
        cut, info = spots.filter_spots(split, image)
        # in place (what Segmenter does to save full-size copies): the same masks
        lean = postprocess.split_touching(mask.copy(), image, in_place=True)
        assert np.array_equal(lean, split)
        lean, lean_info = spots.filter_spots(lean, image, in_place=True)
        assert np.array_equal(lean, cut) and lean_info == info
        measure = postprocess.ObjectMeasure("f")
        measure.add(0, cut, image, prob)
        results.append((split, cut, info, measure.objects, postprocess.skeleton_stats(mask, band=17)))
    (s1, c1, i1, o1, k1), (s2, c2, i2, o2, k2) = results
    assert np.array_equal(s1, s2) and np.array_equal(c1, c2) and i1 == i2 and o1 == o2 and k1 == k2
    assert 0 < len(o1) < postprocess.label8(split)[1]  # the cut dropped the faint group
