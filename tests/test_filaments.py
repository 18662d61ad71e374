"""filaments.py: continuous exact masks, brightness, focus, determinism and flag checks, on tiny images."""
import argparse

import cv2
import numpy as np
import pytest
from scipy import ndimage

from synseg.generate import filaments
from synseg.generate import synth

ONLY_FILAMENTS = ["--aster-prob", "0", "--bundle-prob", "0", "--meshwork-prob", "0", "--er-prob", "0",
                  "--mito-prob", "0", "--filopodia-prob", "0", "--stress-fibre-prob", "0"]


def parse(*argv):
    parser = argparse.ArgumentParser()
    filaments.add_args(parser)
    return filaments.Filaments.from_args(parser.parse_args(list(argv)))


def render(params, seed=0, shape=(96, 96), pixel_size=0.1, psf=1.0, cells=None):
    context = synth.Context(pixel_size=pixel_size, psf_sigma=psf, cells=cells)
    out = filaments.render(np.random.default_rng(seed), shape, params, context)
    assert out.rows is None
    return out.in_focus, out.out_of_focus, out.mask


@pytest.mark.parametrize("params", [filaments.Filaments(), filaments.Filaments(er_prob=0.5, mito_prob=0.5)])
def test_outputs_dtypes_and_shapes(params):
    for seed in range(4):
        in_focus, out_focus, mask = render(params, seed, shape=(70, 90))
        assert in_focus.dtype == out_focus.dtype == np.float32
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        assert in_focus.shape == out_focus.shape == mask.shape == (70, 90)
        assert in_focus.min() >= 0 and out_focus.min() >= 0


@pytest.mark.parametrize("half_width, structure", [("1.0", ndimage.generate_binary_structure(2, 1)),
                                                   ("0.5", ndimage.generate_binary_structure(2, 2))])
def test_single_filament_mask_is_one_component(half_width, structure):
    # a wiggly filament (Lp 2 um, 4 um long at 0.1 um/px): 4-connected once dilated by 1 px,
    # 8-connected as a bare centreline
    args = parse("--filaments", "1", "1", "--filament-length", "4", "4", "--persistence-length", "2", "2",
                 "--out-of-focus", "0", "0", "--mask-half-width", half_width, half_width, "--mask-unit", "px",
                 *ONLY_FILAMENTS)
    checked = 0
    for seed in range(12):
        _, _, mask = render(args, seed, shape=(160, 160))
        # a filament that starts near the border may leave and come back; count the ones that stay inside
        if mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any():
            continue
        _, n = ndimage.label(mask, structure)
        assert n == 1, f"seed {seed}: {n} pieces"
        checked += 1
    assert checked >= 6


def test_mask_covers_every_pixel_the_density_touches():
    # with a half-width of 1.5 px the mask holds every pixel that in-focus density reaches before blur,
    # so every pixel a centreline passes through (the cell-wide ER's unresolved zone is signal without a
    # label by design, so it is left out here)
    args = parse("--mask-half-width", "1.5", "1.5", "--mask-unit", "px", "--er-cell-prob", "0")
    for seed in range(6):
        in_focus, _, mask = render(args, seed, shape=(128, 128))
        assert in_focus.any()
        assert not np.any((in_focus > 0) & (mask == 0)), f"seed {seed}"


def test_centreline_pixels_covered_and_continuous():
    # a circle of radius 20 px: every pixel a dense sampling of the true curve falls in is in the mask
    t = np.linspace(0, 2 * np.pi, 64)
    verts = np.stack([32.3 + 20 * np.sin(t), 31.8 + 20 * np.cos(t)], -1)
    strokes = filaments._Strokes()
    strokes.add_flat(verts, np.zeros(64, int), np.ones(64), np.array([0.2]), np.array([True]))
    y, x, w, _ = strokes.samples(1.0, 2.5)
    core = np.zeros((64, 64), np.uint8)
    filaments._mark(core, y, x)
    mask = filaments._dilate_disc(core, 1.5)
    tt = np.linspace(0, 2 * np.pi, 20000)
    fine_y = np.floor(32.3 + 20 * np.sin(tt) + 0.5).astype(int)
    fine_x = np.floor(31.8 + 20 * np.cos(tt) + 0.5).astype(int)
    assert mask[fine_y, fine_x].all()
    _, n = ndimage.label(core, ndimage.generate_binary_structure(2, 2))
    assert n == 1
    # equal density along the line: the weight per unit length does not depend on the sampling
    length = np.hypot(*np.diff(verts, axis=0).T).sum()
    assert np.isclose(w.sum(), 2.5 * length, rtol=0.02)


@pytest.mark.parametrize("out_of_focus, ratio", [("0", 4.0), ("0.4", 1.5)])
def test_mask_brighter_than_background_noise_free(out_of_focus, ratio):
    # blurred like the generator does (PSF 1 px, out-of-focus 4 px); dense images leave less contrast
    # (the cell-wide ER's packed zone is bright signal without a label by design, so it is left out)
    args = parse("--out-of-focus", out_of_focus, out_of_focus, "--er-cell-prob", "0")
    for seed in range(6):
        in_focus, out_focus, mask = render(args, seed, shape=(128, 128))
        image = cv2.GaussianBlur(in_focus, (0, 0), 1.0) + cv2.GaussianBlur(out_focus, (0, 0), 4.0)
        inside, outside = image[mask > 0].mean(), image[mask == 0].mean()
        assert inside > ratio * outside, f"seed {seed}: {inside:.3f} vs {outside:.3f}"


def test_out_of_focus_structures_are_not_in_the_mask():
    args = parse("--out-of-focus", "1", "1", *ONLY_FILAMENTS)
    in_focus, out_focus, mask = render(args, 3)
    assert out_focus.sum() > 0
    assert in_focus.sum() == 0 and mask.sum() == 0
    # half in focus: every mask pixel is near in-focus density, whatever lies out of focus
    args = parse("--out-of-focus", "0.5", "0.5", "--mask-half-width", "1", "1", "--mask-unit", "px",
                 *ONLY_FILAMENTS)
    in_focus, out_focus, mask = render(args, 4, shape=(128, 128))
    assert out_focus.sum() > 0 and mask.sum() > 0
    near = cv2.dilate((in_focus > 0).astype(np.uint8), np.ones((5, 5), np.uint8))
    assert np.all(near[mask > 0])


def test_same_seed_same_images_other_seed_differs():
    args = parse()
    a = render(args, 7)
    b = render(args, 7)
    c = render(args, 8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_structures_stay_in_cells_when_confined():
    cells = np.zeros((128, 128), bool)
    cells[:, :64] = True
    args = parse("--confine-prob", "1", *ONLY_FILAMENTS)
    for seed in range(3):
        in_focus, _, mask = render(args, seed, shape=(128, 128), cells=cells)
        assert in_focus[:, :64].sum() > 0.8 * in_focus.sum()


def test_er_scene_is_a_connected_network_and_mito_tubes_are_wide():
    er = parse("--er-prob", "1", "--mito-prob", "0", "--out-of-focus", "0", "0")
    _, _, mask = render(er, 1, shape=(200, 200))
    labels, n = ndimage.label(mask)
    assert n >= 1 and np.bincount(labels.ravel())[1:].max() > 0.5 * mask.sum()
    mito = parse("--er-prob", "0", "--mito-prob", "1", "--mito-width", "0.5", "0.5", "--mask-half-width",
                 "0.5", "0.5", "--mask-unit", "px", "--out-of-focus", "0", "0")
    _, _, mask = render(mito, 1, shape=(200, 200))
    # a 0.5 um tube at 0.1 um/px is ~5 px wide: erosion by 1 px keeps much of it, unlike a 1 px line
    assert cv2.erode(mask, np.ones((3, 3), np.uint8)).sum() > 0.3 * mask.sum()


@pytest.mark.parametrize("argv, flag", [
    (["--filament-length", "5", "1"], "--filament-length"),
    (["--persistence-length", "0", "3"], "--persistence-length"),
    (["--brightness-along", "-0.1", "0.2"], "--brightness-along"),
    (["--mask-half-width", "-1", "1"], "--mask-half-width"),
    (["--out-of-focus", "0.2", "1.5"], "--out-of-focus"),
    (["--aster-prob", "1.5"], "--aster-prob"),
    (["--stress-fibre-prob", "-0.1"], "--stress-fibre-prob"),
    (["--er-cell-prob", "2"], "--er-cell-prob"),
    (["--cortex-brightness", "-1", "1"], "--cortex-brightness"),
    (["--er-prob", "0.8", "--mito-prob", "0.5"], "--er-prob"),
    (["--num_curves", "-2"], "--num_curves"),
])
def test_bad_flags_fail_naming_the_flag(argv, flag, capsys):
    # ranges fail while parsing (exit 2), other values when the parameters are built (ValueError)
    try:
        parse(*argv)
    except SystemExit as err:
        assert err.code == 2
        message = capsys.readouterr().err
    except ValueError as err:
        message = str(err)
    else:
        pytest.fail(f"{argv} accepted")
    assert flag in message and ("allowed" in message or "above MAX" in message)


def test_parameters_check_without_a_parser():
    with pytest.raises(ValueError, match=r"--mito-prob: 2 is outside the allowed range \[0.0, 1.0\]"):
        filaments.Filaments(mito_prob=2)
    with pytest.raises(ValueError, match="--mask-unit"):
        filaments.Filaments(mask_unit="nm")
    with pytest.raises(ValueError, match="--filament-width"):
        filaments.Filaments(filament_width=(0.0, 0.1))


def test_num_curves_sets_the_filament_count():
    assert parse("--num_curves", "7").filaments == (7, 7)


def test_filopodia_stick_out_of_the_cell_edge():
    cells = np.zeros((160, 160), bool)
    cells[:, :80] = True
    args = parse("--filaments", "0", "0", "--confine-prob", "1", "--out-of-focus", "0", "0", *ONLY_FILAMENTS,
                 "--filopodia-prob", "1")
    in_focus, _, mask = render(args, 2, shape=(160, 160), cells=cells)
    assert in_focus[:, 84:].sum() > 0 and in_focus[:, :80].sum() > 0  # they cross the edge at x = 80
    assert mask[:, 84:].any()


def test_cortex_rim_is_signal_but_not_mask():
    cells = np.zeros((96, 96), bool)
    cells[20:80, 20:80] = True
    args = parse("--filaments", "0", "0", "--confine-prob", "1", "--cortex-prob", "1", *ONLY_FILAMENTS)
    in_focus, _, mask = render(args, 0, cells=cells)
    assert in_focus[20:80, 20:80].max() > 0 and in_focus[~cells].max() == 0
    assert in_focus[21, 50] > in_focus[50, 50]  # bright at the edge, fading inwards
    assert mask.sum() == 0


def test_cortex_brightness_flag_scales_the_rim():
    cells = np.zeros((96, 96), bool)
    cells[20:80, 20:80] = True
    peaks = []
    for level in ("0.5", "2.0"):
        args = parse("--filaments", "0", "0", "--confine-prob", "1", "--cortex-prob", "1",
                     "--cortex-brightness", level, level, *ONLY_FILAMENTS)
        in_focus, _, mask = render(args, 0, cells=cells)
        assert mask.sum() == 0
        peaks.append(in_focus.max())
    assert np.isclose(peaks[1], 4 * peaks[0], rtol=1e-4)


def test_stress_fibres_are_long_continuous_lines_inside_the_cell():
    cells = np.zeros((200, 200), bool)
    cells[10:190, 10:190] = True
    args = parse(*ONLY_FILAMENTS, "--filaments", "0", "0", "--confine-prob", "1", "--cortex-prob", "0",
                 "--out-of-focus", "0", "0", "--stress-fibre-prob", "1", "--mask-half-width", "1", "1",
                 "--mask-unit", "px")
    in_focus, _, mask = render(args, 3, shape=(200, 200), cells=cells)
    # the mask may reach past the edge by the fibre's half-width (thick ones are tubes) plus its own half-width
    far_out = ndimage.distance_transform_edt(~cells) > 3
    assert mask.any() and not mask[far_out].any()
    labels, n = ndimage.label(mask, ndimage.generate_binary_structure(2, 2))
    # at least one fibre runs unbroken over 5 um (50 px) at 0.1 um/px
    extents = [max(np.ptp(np.nonzero(labels == k)[0]), np.ptp(np.nonzero(labels == k)[1])) for k in range(1, n + 1)]
    assert max(extents) >= 50


def test_cell_wide_er_is_packed_in_the_middle_and_labels_only_resolvable_tubules():
    cells = np.zeros((256, 256), bool)
    cv2.circle(cells.view(np.uint8), (128, 128), 110, 1, -1)
    args = parse("--er-prob", "1", "--mito-prob", "0", "--er-cell-prob", "1", "--confine-prob", "1",
                 "--cortex-prob", "0", "--out-of-focus", "0", "0", "--mask-half-width", "1", "1", "--mask-unit", "px")
    checked = 0
    for seed in range(4):
        in_focus, _, mask = render(args, seed, shape=(256, 256), cells=cells)
        assert mask.any() and not mask[ndimage.distance_transform_edt(~cells) > 2].any()
        # signal without a label (the unresolved, packed zone) exists and lies away from the cell edge
        unlabelled = (cv2.GaussianBlur(in_focus, (0, 0), 1.0) > 0.05) & (mask == 0) & cells
        dist = ndimage.distance_transform_edt(cells)
        if unlabelled.sum() > 200:
            assert np.median(dist[unlabelled]) > np.median(dist[cells])
            checked += 1
        # more signal in the middle than at the periphery (where only a share of it is labelled)
        inner, outer = dist > 60, (dist > 3) & (dist < 25)
        assert in_focus[inner].mean() > in_focus[outer].mean()
    assert checked >= 2


def test_unlabelled_er_strokes_leave_the_old_er_scene_unchanged():
    # --er-cell-prob 0 keeps the patch network: the same images as drawing it directly
    args = parse("--er-prob", "1", "--mito-prob", "0", "--er-cell-prob", "0")
    a = render(args, 2, shape=(128, 128))
    b = render(args, 2, shape=(128, 128))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert a[2].any()


def _levels(signal=100.0, background=100.0, read_noise=2.0, psf=1.0):
    return synth.Levels(psf_sigma=psf, defocus=3.0, signal=signal, background=background, cytoplasm=0.0, haze=0.0,
                        illumination=0.0, read_noise=read_noise)


def test_visible_mask_keeps_a_clear_line_and_drops_one_below_the_noise():
    """Two straight lines of one mask each: brightness 1 (100 photons over 100 of background: SNR ~10) and
    0.01 (SNR ~0.04 after the PSF). With --label-snr 1 only the clear line stays; with 0.005 both do."""
    shape = (64, 64)
    in_focus = np.zeros(shape, np.float32)
    mask = np.zeros(shape, np.uint8)
    in_focus[16, 8:56] = 1.0
    in_focus[48, 8:56] = 0.01
    mask[15:18, 8:56] = 1
    mask[47:50, 8:56] = 1
    context = synth.Context(pixel_size=0.1, psf_sigma=1.0)
    kept = filaments.visible_mask(mask, in_focus, _levels(), context, 1.0)
    assert kept.dtype == np.uint8 and set(np.unique(kept)) <= {0, 1}
    assert kept[15:18, 8:56].all() and not kept[40:].any()
    both = filaments.visible_mask(mask, in_focus, _levels(), context, 0.005)
    assert np.array_equal(both, mask)
    assert not np.any(kept & ~mask)  # never adds to the mask


def test_visible_mask_counts_the_shot_noise_of_a_bright_region_under_the_line():
    """The same line over a bright region (density 50: ~70 photons of noise s.d.) is no longer visible."""
    shape = (64, 64)
    in_focus = np.zeros(shape, np.float32)
    in_focus[32, 8:56] = 0.3
    mask = np.zeros(shape, np.uint8)
    mask[31:34, 8:56] = 1
    quiet = synth.Context(pixel_size=0.1, psf_sigma=1.0)
    bright = synth.Context(pixel_size=0.1, psf_sigma=1.0, bright=np.full(shape, 50.0, np.float32))
    assert filaments.visible_mask(mask, in_focus, _levels(), quiet, 1.0).sum() == mask.sum()
    assert filaments.visible_mask(mask, in_focus, _levels(), bright, 1.0).sum() == 0


def test_label_snr_changes_only_the_mask_and_only_by_removing():
    """--label-snr draws nothing: the images are byte-identical with and without it; the mask can only shrink,
    and on images with faint filaments it does."""
    from synseg.generate import cytoskeleton_generator as cg
    parser = cg.get_args_parser()
    plain = parser.parse_args(["--output-dir", "unused", "--image-size", "96"])
    strict = parser.parse_args(["--output-dir", "unused", "--image-size", "96", "--label-snr", "1.0"])
    removed = 0
    for index in range(8):
        a_img, a_mask, _ = cg.render_one(synth.image_rng(3, index), plain)
        b_img, b_mask, _ = cg.render_one(synth.image_rng(3, index), strict)
        assert np.array_equal(a_img, b_img)
        assert not np.any(b_mask & ~a_mask)
        removed += int(a_mask.sum() - b_mask.sum())
    assert removed > 0
