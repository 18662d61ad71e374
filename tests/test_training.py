"""training.py and the two training scripts: checkpoints, resume, data checks, presets, losses, DDP."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from synseg.train import augment
from synseg import normalization
from synseg import tasks
from synseg import tiffio
from synseg.train import train_cytoskeleton as train_cytoskeleton_seg
from synseg.train import train_vesicle as train_vesicle_seg
from synseg.train import training
import unet
from synseg.metrics import pixel_scores
from tests.conftest import ROOT


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these models are tiny, and two OpenMP threads on a shared 2-core box
    spend most of their time waiting for each other (50x slower steps under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def blob_pair(rng, size=32, dtype=np.uint16):
    """One image with bright disks on a noisy background, and its 0/1 mask."""
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), bool)
    for _ in range(3):
        cy, cx = rng.integers(4, size - 4, 2)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(2.5, 4.5) ** 2
    top = 1500 if dtype == np.uint16 else 150
    image = 0.1 * top + rng.normal(0, 0.015 * top, (size, size)) + top * mask
    return image.clip(0, np.iinfo(dtype).max).astype(dtype), mask.astype(np.uint8)


def make_dataset(root, n_train=4, n_val=2, size=32, dtype=np.uint16, seed=0, pixel_size=0.1):
    """DATA/{train,val}/{img,mask} with n pairs each and a generator.json; returns root."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            image, mask = blob_pair(rng, size, dtype)
            tiffio.write_tiff(root / split / "img" / f"{i:05d}.tif", image)
            (root / split / "mask").mkdir(parents=True, exist_ok=True)
            np.save(root / split / "mask" / f"{i:05d}.npy", mask)
    (root / "generator.json").write_text(json.dumps({"pixel_size_um": pixel_size}))
    return root


def parse(module, data, out, *extra):
    """Arguments for a quick CPU run of `module` on `data`."""
    return module.get_args_parser().parse_args(
        ["--data-dir", str(data), "--output-dir", str(out), "--device", "cpu", "--num-workers", "0",
         "--base-channels", "4", "--depth", "2", "--crop-size", "32", "--epochs", "1", *extra])


def test_one_step_leaves_a_checkpoint_that_loads_and_predicts(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_train=2)
    out = tmp_path / "out"
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, out)) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("arguments:") and "epoch 1/1" in stdout
    assert {p.name for p in out.iterdir()} == {"best_vesicle_model.pth", "last.pth", "metrics.csv", "curves.png"}
    model, info = unet.load_model(out / "best_vesicle_model.pth")
    assert info["task"] == "vesicle" and info["model_args"]["first_kernel"] == 3
    assert info["normalization"] == {"mode": "local", "radius": 7.0, "sigma": 4.0,
                                                                           "compress": "asinh"}  # the preset's, stored
    assert info["pixel_size_um"] == pytest.approx(0.1)
    assert info["train_args"]["epochs"] == 1 and 0.0 <= info["metrics"]["dice"] <= 1.0
    _, last = unet.load_model(out / "last.pth")
    assert last["epoch"] == 1 and [r["steps"] for r in last["history"]] == [1]
    image = tiffio.read_image(data / "val" / "img" / "00000.tif")[0]
    x = torch.from_numpy(normalization.normalize_image(image, info["normalization"]).astype(np.float32))[None, None]
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (1, 1, 32, 32) and torch.isfinite(logits).all()
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss,val_loss,dice,iou,precision,recall") and len(rows) == 2
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cytoskeleton_cli_end_to_end(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=2, dtype=np.uint8)
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "train_cytoskeleton_seg.py"), "--data_dir", str(data), "--output_dir",
           str(out), "--device", "cpu", "--num_workers", "0", "--base-channels", "4", "--depth", "2",
           "--crop-size", "24", "--epochs", "1", "--loss", "bce+cldice", "--pixel-size", "0.05"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "loss bce+cldice" in proc.stdout
    _, info = unet.load_model(out / "best_cytoskeleton_model.pth")
    assert info["model_args"]["first_kernel"] == 5
    assert info["normalization"] == {"mode": "local", "radius": 7.0, "sigma": 4.0,
                                                                           "compress": "asinh"}
    assert info["pixel_size_um"] == pytest.approx(0.05)  # --pixel-size wins over generator.json


def test_the_two_scripts_share_every_flag_and_differ_only_in_preset():
    ves, cyto = train_vesicle_seg.get_args_parser(), train_cytoskeleton_seg.get_args_parser()
    assert [a.option_strings for a in ves._actions] == [a.option_strings for a in cyto._actions]
    a, b = vars(ves.parse_args([])), vars(cyto.parse_args([]))
    assert {k for k in a if a[k] != b[k]} == {"preset"}
    assert tasks.TASKS[a["preset"]].first_kernel == 3 and tasks.TASKS[b["preset"]].first_kernel == 5


class _Stop(Exception):
    pass


def test_resume_continues_where_an_interrupted_run_stopped(tmp_path, monkeypatch, capsys):
    data = make_dataset(tmp_path / "data", n_train=4)
    extra = ("--epochs", "2", "--batch-size", "2", "--dropout", "0.2")
    straight = tmp_path / "straight"
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, straight, *extra)) == 0

    interrupted = tmp_path / "interrupted"
    real_epoch, calls = training.train_one_epoch, []

    def stop_in_second_epoch(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise _Stop
        return real_epoch(*a, **k)

    monkeypatch.setattr(training, "train_one_epoch", stop_in_second_epoch)
    with pytest.raises(_Stop):
        train_vesicle_seg.main(parse(train_vesicle_seg, data, interrupted, *extra))
    monkeypatch.setattr(training, "train_one_epoch", real_epoch)
    assert unet.load_model(interrupted / "last.pth")[1]["epoch"] == 1
    capsys.readouterr()

    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, interrupted, *extra, "--resume")) == 0
    stdout = capsys.readouterr().out
    assert "resuming from" in stdout and "epoch 1/2" not in stdout and "epoch 2/2" in stdout
    a, info_a = unet.load_model(straight / "last.pth")
    b, info_b = unet.load_model(interrupted / "last.pth")
    assert info_b["epoch"] == 2 and [r["epoch"] for r in info_b["history"]] == [1, 2]
    assert info_b["optimizer"]["state"][0]["step"] == info_a["optimizer"]["state"][0]["step"] == 4
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(ta.float(), tb.float(), atol=1e-5), name  # same data, order, dropout, lr


def test_resume_refuses_a_different_architecture(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_train=2)
    out = tmp_path / "out"
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, out)) == 0
    args = parse(train_vesicle_seg, data, out, "--epochs", "2", "--resume", "--base-channels", "8")
    assert train_vesicle_seg.main(args) == 2
    assert "resume with the same model flags" in capsys.readouterr().err


def test_init_weights_fine_tunes_from_a_model_and_refuses_mismatches(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_train=2)
    first = tmp_path / "first"
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, first)) == 0
    start, _ = unet.load_model(first / "last.pth")
    capsys.readouterr()
    tuned = tmp_path / "tuned"
    args = parse(train_vesicle_seg, data, tuned, "--init-weights", str(first / "last.pth"), "--lr", "1e-9")
    assert train_vesicle_seg.main(args) == 0
    assert "starting from the weights of" in capsys.readouterr().out
    after, info = unet.load_model(tuned / "last.pth")
    assert info["epoch"] == 1 and info["optimizer"]["state"][0]["step"] == 1  # a new optimizer, not resumed
    conv = [k for k, v in start.state_dict().items() if v.dtype.is_floating_point and v.dim() == 4][0]
    # with a vanishing learning rate the weights stay those of the first run, not a fresh random start
    assert torch.allclose(start.state_dict()[conv], after.state_dict()[conv], atol=1e-6)
    bad = parse(train_vesicle_seg, data, tmp_path / "bad", "--init-weights", str(first / "last.pth"),
                "--base-channels", "8")
    assert train_vesicle_seg.main(bad) == 2
    assert "same model flags" in capsys.readouterr().err
    both = parse(train_vesicle_seg, data, tmp_path / "both", "--init-weights", str(first / "last.pth"), "--resume")
    assert train_vesicle_seg.main(both) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_missing_mask_is_named(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    (data / "train" / "mask" / "00002.npy").unlink()
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "00002.tif" in err and "no mask" in err and str(data / "train" / "mask" / "00002.npy") in err
    assert not (tmp_path / "out").exists()


def test_shape_mismatch_and_empty_folder_are_named(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    np.save(data / "val" / "mask" / "00001.npy", np.zeros((31, 32), np.uint8))
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "00001.tif" in err and "(32, 32)" in err and "(31, 32)" in err
    for f in (data / "train" / "img").iterdir():
        f.unlink()
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, tmp_path / "out")) == 2
    assert "no images" in capsys.readouterr().err


def test_missing_folder_flags_are_an_error(tmp_path, capsys):
    args = train_vesicle_seg.get_args_parser().parse_args(["--device", "cpu", "--output-dir", str(tmp_path)])
    assert train_vesicle_seg.main(args) == 2
    assert "--train-img-dir" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_default_device_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_train=2)
    args = train_vesicle_seg.get_args_parser().parse_args(["--data-dir", str(data), "--output-dir", str(tmp_path)])
    assert args.device == "cuda" and args.epochs == 50 and args.batch_size == 4 and args.lr == 1e-3
    assert train_vesicle_seg.main(args) == 2
    assert "--device cpu" in capsys.readouterr().err


def test_vesicle_normalisation_and_trained_model_ignore_global_brightness(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_train=16, n_val=3, seed=1)
    out = tmp_path / "out"
    args = parse(train_vesicle_seg, data, out, "--epochs", "10", "--base-channels", "8", "--lr", "0.01")
    assert train_vesicle_seg.main(args) == 0
    model, info = unet.load_model(out / "best_vesicle_model.pth")
    for i in range(3):
        image = tiffio.read_image(data / "val" / "img" / f"{i:05d}.tif")[0].astype(np.float32)
        truth = np.load(data / "val" / "mask" / f"{i:05d}.npy")
        preds = []
        for factor in (1.0, 0.01, 100.0):
            x = normalization.normalize_image(image * np.float32(factor), info["normalization"])
            if factor == 1.0:
                x_ref = x
            assert np.allclose(x, x_ref, atol=1e-4)
            with torch.no_grad():
                preds.append(model(torch.from_numpy(x.astype(np.float32))[None, None])[0, 0].numpy() > 0)
        assert pixel_scores(preds[0], truth)["dice"] > 0.5  # the model has learned something
        for p in preds[1:]:
            assert pixel_scores(p, preds[0])["dice"] >= 0.95


def test_augmented_sample_depends_on_seed_epoch_index_only(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=4, size=40)
    pairs = training.find_pairs(data / "train" / "img", data / "train" / "mask")
    for task in tasks.TASKS.values():
        ds = training.SegmentationDataset(pairs, task, train=True, crop_size=24, seed=3)
        a, b, c = ds[(2, 5)], ds[(2, 5)], ds[(2, 6)]
        assert a[0].shape == (1, 24, 24) and a[1].shape == (1, 24, 24)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert not torch.equal(a[0], c[0])
        batches = {}
        for workers in (0, 2):
            sampler = training.EpochSampler(len(ds), seed=3)
            sampler.set_epoch(4)
            loader = training.make_loader(ds, 2, sampler, workers, torch.device("cpu"))
            batches[workers] = [x for x, _ in loader]
        assert all(torch.equal(u, v) for u, v in zip(batches[0], batches[2]))


def test_spatial_augmentations_keep_image_and_mask_aligned_and_binary():
    rng = np.random.default_rng(0)
    _, mask = blob_pair(rng, size=64)
    image = mask.astype(np.float32) * 10
    preset = augment.FilamentAugmentation(p_elastic=1.0)
    for k in range(10):
        x, m = preset.spatial(image, mask, np.random.default_rng(k))
        assert set(np.unique(m)) <= {0, 1} and m.sum() > 0
        assert pixel_scores(x > 5, m)["iou"] > 0.8
    x, m = augment.random_crop(image, mask, 80, rng)  # larger than the image: mirrored padding
    assert x.shape == m.shape == (80, 80) and np.array_equal(x > 5, m > 0)


def test_vesicle_intensity_spans_orders_of_magnitude_and_cytoskeleton_stays_in_range():
    image = np.full((16, 16), 1000, np.uint16)
    image[4:8, 4:8] = 5000
    vesicle = augment.BlobAugmentation(p_redigitize=0.0, p_square=0.0)
    maxima = [vesicle.intensity(image, np.random.default_rng(k)).max() for k in range(200)]
    assert min(maxima) < 5000 * 0.05 and max(maxima) > 5000 * 20
    recorded = augment.BlobAugmentation(p_redigitize=1.0, p_square=0.0)
    for k in range(50):
        x = recorded.intensity(image, np.random.default_rng(k))
        assert np.array_equal(x, np.rint(x)) and 0 <= x.min() and x.max() <= 65535
        assert x.max() >= 40  # never rounded away: the bright level lands at >= 50 counts
    cyto = augment.FilamentAugmentation(p_clahe=1.0, p_contrast=1.0)
    for k in range(20):
        x = cyto.intensity(image, np.random.default_rng(k))
        assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0


def test_soft_skeleton_is_thin_and_cldice_punishes_gaps_more_than_thickening():
    bar = torch.zeros(1, 1, 32, 48)
    bar[..., 12:19, 4:44] = 1  # 7 px wide
    skel = training.soft_skeleton(bar, iterations=5)
    assert skel.sum() < 0.3 * bar.sum() and (skel * (1 - bar)).sum() == 0 and skel.sum() > 0
    line = torch.zeros(1, 1, 32, 48)
    line[..., 15:18, 4:44] = 1  # 3 px wide filament
    gap, thick = line.clone(), line.clone()
    gap[..., 15:18, 20:26] = 0  # 18 px missing, filament broken
    thick[..., 18, 10:28] = 1  # 18 px extra, topology intact
    loss_gap = training.soft_cldice_loss(gap, line).item()
    loss_thick = training.soft_cldice_loss(thick, line).item()
    assert training.soft_cldice_loss(line, line).item() < 0.02
    assert loss_gap > 2 * loss_thick
    logits = torch.zeros(1, 1, 32, 48, requires_grad=True)
    training.SegmentationLoss("bce+cldice")(logits, line).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="bce\\+dice"):
        training.SegmentationLoss("focal")


def test_kfold_trains_each_fold_and_writes_mean_and_std(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_train=4, n_val=0)
    out = tmp_path / "out"
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, out, "--folds", "2")) == 0
    for k in (1, 2):
        assert unet.load_model(out / f"fold{k}" / "best_vesicle_model.pth")[1]["task"] == "vesicle"
    lines = (out / "folds.csv").read_text().splitlines()
    assert lines[0] == "fold,epoch,loss,dice,iou,precision,recall"
    rows = [line.split(",") for line in lines[1:]]
    assert [r[0] for r in rows] == ["1", "2", "mean", "std"]
    dice = [float(r[3]) for r in rows]
    assert dice[2] == pytest.approx((dice[0] + dice[1]) / 2)
    assert dice[3] == pytest.approx(np.std(dice[:2], ddof=1))
    assert "2-fold cross-validation" in capsys.readouterr().out
    splits = training.kfold_splits(7, 3, seed=0)
    held = np.concatenate([h for _, h in splits])
    assert sorted(held) == list(range(7)) and all(len(np.intersect1d(t, h)) == 0 for t, h in splits)


def test_two_process_ddp_on_gloo_writes_one_checkpoint(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=8)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "train_vesicle_seg.py"), "--data-dir", str(data), "--output-dir", str(out),
           "--device", "cpu", "--num-workers", "0", "--base-channels", "4", "--depth", "2",
           "--crop-size", "32", "--epochs", "1", "--batch-size", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("arguments:") == 1 and "DDP world size 2" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["best_vesicle_model.pth", "curves.png", "last.pth",
                                                      "metrics.csv"]
    model, info = unet.load_model(out / "last.pth")
    assert info["world_size"] == 2
    assert info["history"][0]["steps"] == 2  # 8 images / (2 per step x 2 processes)
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)
