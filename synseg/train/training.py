"""The one training loop behind train_vesicle_seg.py and train_cytoskeleton_seg.py.

Shaped like torchvision's references/segmentation: named augmentation presets (augment.py, one per task
in tasks.py), a dataset that checks its image/mask pairs before any step, train_one_epoch(), evaluate(), and
a main(args) with --resume, k-fold cross-validation and DistributedDataParallel under torchrun. The two
scripts only pick their task; every other line they run lives here. The command line becomes one frozen
Config (Config.from_args) that the functions below read.

    python train_vesicle_seg.py --data-dir DATA --epochs 5 --device cpu
    torchrun --nproc_per_node 4 train_cytoskeleton_seg.py --data-dir DATA --device cuda

Data layout: DIR/train/img/NAME.tif with DIR/train/mask/NAME.npy (0/1, same height and width),
the same under DIR/val/, and optionally DIR/generator.json whose "pixel_size_um" is recorded in
the checkpoint. Images may be .tif/.tiff/.png/.jpg and are read at their full bit depth.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from synseg.train import augment, distill
from synseg.train.runtime import Runtime, all_reduce_sum
from synseg import cli
from synseg import metrics
from synseg import normalization
from synseg import tasks
from synseg import tiffio
import unet

LOSSES = ("bce", "dice", "bce+dice", "bce+cldice")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
METRIC_KEYS = ("loss", "dice", "iou", "precision", "recall")


class DatasetError(ValueError):
    """A problem with the training data, reported as one line naming the file."""


class TrainingError(RuntimeError):
    """A problem with the arguments or the run (resume, device), reported as one line."""


class Diverged(TrainingError):
    """The weights or the validation loss stopped being finite (exit code 1); nothing of that epoch is saved."""


# --------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Config:
    """One training run, built once from the command line (get_args_parser); fields are the flags' names."""

    data_dir: Path | None = None
    train_img_dir: Path | None = None
    train_mask_dir: Path | None = None
    val_img_dir: Path | None = None
    val_mask_dir: Path | None = None
    pixel_size: float | None = None  # um per training pixel; None: generator.json's
    base_channels: int = 64
    depth: int = 3
    dropout: float = 0.0
    epochs: int = 50
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "bce+dice"
    crop_size: int = 256
    folds: int = 0
    seed: int = 0
    resume: str | None = None  # "last" (--resume alone) or a path
    init_weights: Path | None = None
    teacher: Path | None = None  # distill.py
    distill_weight: float = 0.5
    device: str = "cuda"
    precision: str = "auto"
    num_workers: int = 4
    output_dir: Path = Path("checkpoints")
    overwrite: bool = False
    preset: str = "vesicle"  # the task (a tasks.TASKS key)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        """The run from parsed arguments (every field is a flag of get_args_parser)."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})

    def record(self) -> dict:
        """{flag name: value} in the order of the flags, as the checkpoints record it ("train_args")."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


# --------------------------------------------------------------------------- data on disk

def list_images(folder: Path) -> list[Path]:
    """Image files (tiffio.IMAGE_SUFFIXES) in `folder`, sorted by name; hidden and partial files skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in tiffio.IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise DatasetError(f"{folder}: no images ({' '.join(tiffio.IMAGE_SUFFIXES)}) in this folder")
    return files


def as_2d(image: np.ndarray, path) -> np.ndarray:
    """One 2D plane from a read image: singleton axes dropped, RGB(A) averaged to grey."""
    image = np.squeeze(image)
    if image.ndim == 3 and image.shape[-1] in (3, 4):  # colour PNG/JPEG
        image = image[..., :3].astype(np.float32).mean(axis=-1)
    if image.ndim != 2:
        raise DatasetError(f"{path}: expected a 2D single-channel image, got shape {image.shape}")
    return image


def read_frame(image_path: Path, frame: int) -> np.ndarray:
    """Plane `frame` of a TYX (or ZYX) stack; a TIFF's page alone is read, so a long video costs one frame."""
    if Path(image_path).suffix.lower() in tiffio.TIFF_SUFFIXES:
        try:
            with tifffile.TiffFile(image_path) as tif:
                return tif.pages[frame].asarray()
        except (tifffile.TiffFileError, IndexError, ValueError, OSError) as err:
            raise DatasetError(f"{image_path}: frame {frame} not readable ({err})") from None
    return tiffio.read_image(image_path)[0][frame]


def read_pair(image_path: Path, mask_path: Path, frame: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image at full bit depth, uint8 0/1 mask), with shapes checked against each other.

    frame: for a time-lapse (TYX image, TYX .npy mask), the plane to read; None for a 2D pair.
    """
    if frame is None:
        image = as_2d(tiffio.read_image(image_path)[0], image_path)
    else:
        image = as_2d(read_frame(image_path, frame), f"{image_path} frame {frame}")
    try:
        mask = np.load(mask_path, allow_pickle=False, mmap_mode=None if frame is None else "r")
        mask = np.array(mask if frame is None else mask[frame])
    except (OSError, ValueError, IndexError, EOFError) as err:  # EOFError: a zero-byte or cut file
        raise DatasetError(f"{mask_path}: not a readable .npy mask ({err or type(err).__name__})") from None
    mask = np.squeeze(mask)
    if mask.shape != image.shape:
        raise DatasetError(f"{image_path}: image shape {image.shape} differs from mask {mask_path} "
                           f"shape {mask.shape}")
    return image, (mask > 0).astype(np.uint8)


def find_pairs(img_dir: Path, mask_dir: Path, check: bool = True, show: bool = True) -> list[tuple]:
    """(image, mask) paths matched by stem; every image must have NAME.npy of the same shape.

    A time-lapse (a TYX mask, as the generators write with --frames N) gives one sample per frame,
    (image, mask, frame); 2D pairs stay (image, mask). With `check`, every sample is read once so that
    the first missing, unreadable or mismatched file is named before training starts instead of crashing
    a worker mid-epoch.
    """
    images = list_images(img_dir)
    if not Path(mask_dir).is_dir():
        raise DatasetError(f"{mask_dir}: mask folder not found")
    pairs = []
    for image in images:
        mask = Path(mask_dir) / f"{image.stem}.npy"
        if not mask.is_file():
            raise DatasetError(f"{image}: no mask {mask}")
        try:
            shape = np.squeeze(np.load(mask, mmap_mode="r")).shape
        except (OSError, ValueError, EOFError) as err:  # EOFError: a zero-byte or cut file
            raise DatasetError(f"{mask}: not a readable .npy mask ({err or type(err).__name__})") from None
        if len(shape) == 3:  # a video: every frame is a sample
            pairs += [(image, mask, t) for t in range(shape[0])]
        else:
            pairs.append((image, mask))
    if check:
        bar = tqdm(pairs, desc=f"checking {img_dir}", disable=not show or len(pairs) < 50, leave=False)
        for pair in bar:
            read_pair(*pair)
    return pairs


def image_shapes(pairs) -> set[tuple[int, int]]:
    """The distinct (H, W) of the masks of `pairs` (cheap: memory-mapped .npy headers)."""
    return {tuple(np.squeeze(np.load(p[1], mmap_mode="r")).shape[-2:]) for p in pairs}


def read_generator_info(*folders: Path) -> dict:
    """The generator.json found in the first of `folders` that has one, else {}."""
    for folder in folders:
        path = Path(folder) / "generator.json"
        if path.is_file():
            try:
                info = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise DatasetError(f"{path}: not readable JSON ({err})") from None
            if not isinstance(info, dict):
                raise DatasetError(f"{path}: expected a JSON object, got {type(info).__name__}")
            return info
    return {}


# --------------------------------------------------------------------------- dataset

class SegmentationDataset(Dataset):
    """Image/mask pairs -> (normalised image (1, H, W) float32, mask (1, H, W) float32 0/1).

    Training samples are augmented with a generator seeded from (seed, epoch, index): sample k
    of epoch e is the same whatever the number of workers or processes. The key is the pair
    (index, epoch) that EpochSampler yields; a plain index means epoch 0. Normalisation uses the
    whole image, as prediction does, and happens before cropping.
    """

    def __init__(self, pairs, task, train: bool, crop_size: int = 0, seed: int = 0):
        """task: the tasks.Task whose augmentation preset and normalisation apply."""
        self.pairs, self.task, self.train = list(pairs), task, train
        self.crop_size, self.seed = crop_size, seed
        augment.serial_cv2()  # in this (parent) process, before any loader forks its workers

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        image, mask = read_pair(*self.pairs[index])
        if self.train:
            rng = np.random.default_rng((self.seed, epoch, index))
            image = self.task.augmentation.intensity(image, rng)
        x = normalization.normalize_image(image, self.task.normalization)
        if self.train:
            x, mask = augment.random_crop(x, mask, self.crop_size, rng)
            x, mask = self.task.augmentation.spatial(x, mask, rng)
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
        y = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
        return x, y


class EpochSampler(Sampler):
    """Shuffled indices (sharded across DDP ranks) handed to the dataset as (index, epoch) keys."""

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.inner = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for `epoch` (the order is a function of seed and epoch only)."""
        self.epoch = epoch
        self.inner.set_epoch(epoch)

    def __iter__(self):
        return ((int(i), self.epoch) for i in self.inner)

    def __len__(self) -> int:
        return len(self.inner)


def make_loader(dataset: Dataset, batch_size: int, sampler, num_workers: int, device: torch.device) -> DataLoader:
    """A DataLoader with persistent workers, and pinned memory only where it helps (CUDA)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=device.type == "cuda", persistent_workers=num_workers > 0, drop_last=False)


# --------------------------------------------------------------------------- losses

def soft_dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch (sums, not a mean of per-image ratios)."""
    inter = (prob * target).sum()
    return 1.0 - (2.0 * inter + smooth) / (prob.sum() + target.sum() + smooth)


def _soft_erode(x: torch.Tensor) -> torch.Tensor:
    """Grey-level erosion with a 3x3 cross: min of a vertical and a horizontal 3-pixel min."""
    return torch.minimum(-F.max_pool2d(-x, (3, 1), 1, (1, 0)), -F.max_pool2d(-x, (1, 3), 1, (0, 1)))


def _soft_dilate(x: torch.Tensor) -> torch.Tensor:
    """Grey-level dilation with a 3x3 square."""
    return F.max_pool2d(x, 3, 1, 1)


def soft_skeleton(x: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    """Differentiable skeleton of a probability map (B, 1, H, W), after Shit et al. CVPR 2021.

    Each round erodes the map once and keeps what an opening of the eroded map would remove:
    the ridge pixels at that depth. `iterations` should exceed the half-width of the thickest
    structure in pixels.
    """
    skel = F.relu(x - _soft_dilate(_soft_erode(x)))
    for _ in range(iterations):
        x = _soft_erode(x)
        ridge = F.relu(x - _soft_dilate(_soft_erode(x)))
        skel = skel + F.relu(ridge - skel * ridge)
    return skel


def soft_cldice_loss(prob: torch.Tensor, target: torch.Tensor, iterations: int = 5,
                     smooth: float = 1.0) -> torch.Tensor:
    """1 - clDice: harmonic mean of topology precision and sensitivity (Shit et al. CVPR 2021).

    Precision: how much of the predicted skeleton lies inside the true mask; sensitivity: how
    much of the true skeleton the prediction covers. A gap in a filament costs skeleton
    sensitivity even when it is only a few pixels of area.
    """
    skel_pred, skel_true = soft_skeleton(prob, iterations), soft_skeleton(target, iterations)
    tprec = ((skel_pred * target).sum() + smooth) / (skel_pred.sum() + smooth)
    tsens = ((skel_true * prob).sum() + smooth) / (skel_true.sum() + smooth)
    return 1.0 - 2.0 * tprec * tsens / (tprec + tsens)


class SegmentationLoss(nn.Module):
    """BCE on logits, optionally plus soft Dice or (1 - alpha) soft Dice + alpha clDice.

    Names as on the command line: bce, dice, bce+dice, bce+cldice. Computed in float32 even
    when the network ran under autocast.
    """

    def __init__(self, name: str = "bce+dice", cldice_alpha: float = 0.5, skeleton_iterations: int = 5):
        super().__init__()
        if name not in LOSSES:
            raise ValueError(f"loss {name!r} not understood; use one of {', '.join(LOSSES)}")
        self.name, self.alpha, self.iterations = name, cldice_alpha, skeleton_iterations
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        loss = self.bce(logits, target) if self.name != "dice" else logits.new_zeros(())
        if self.name == "bce":
            return loss
        prob = torch.sigmoid(logits)
        if self.name == "bce+cldice":
            return (loss + (1 - self.alpha) * soft_dice_loss(prob, target)
                    + self.alpha * soft_cldice_loss(prob, target, self.iterations))
        return loss + soft_dice_loss(prob, target)


# --------------------------------------------------------------------------- distributed (Runtime: runtime.py)

def setup_runtime(device_name: str, precision: str) -> Runtime:
    """Resolve device and precision; join the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    try:
        device = unet.get_device(device_name, verbose=rank == 0)
    except (RuntimeError, ValueError) as err:
        raise TrainingError(str(err)) from None
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    amp_dtype = unet.autocast_dtype(device, precision)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick its fastest kernels
    return Runtime(device, amp_dtype, channels_last=amp_dtype is not None, rank=rank, world_size=world)


# --------------------------------------------------------------------------- the loop

def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, floor: float = 0.01):
    """Per-step schedule: linear warm-up to the base lr, then cosine down to floor * lr."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def to_device(x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Move a batch to the device in the memory format the model uses."""
    x = x.to(rt.device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if rt.channels_last else x


def train_step(model, x, y, loss_fn, optimizer, scaler, rt: Runtime) -> torch.Tensor:
    """One optimisation step on a batch already on the device; returns the detached loss."""
    with torch.autocast(rt.device.type, dtype=rt.amp_dtype or torch.float32, enabled=rt.amp_dtype is not None):
        logits = model(x)
    loss = loss_fn(logits, y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def train_one_epoch(model, loader, loss_fn, optimizer, scheduler, scaler, rt: Runtime, desc: str, teacher=None) -> dict:
    """One training pass (targets blended by `teacher`, distill.Teacher, when given); mean loss and step count."""
    model.train()
    total, count, steps = torch.zeros((), device=rt.device), 0, 0
    bar = tqdm(loader, desc=desc, disable=not rt.main, leave=False, dynamic_ncols=True)
    for x, y in bar:
        x, y = to_device(x, rt), y.to(rt.device, non_blocking=True)
        y = teacher.targets(x, y) if teacher else y
        loss = train_step(model, x, y, loss_fn, optimizer, scaler, rt)
        scheduler.step()
        total += loss * x.shape[0]
        count += x.shape[0]
        steps += 1
        if rt.main and (steps % 5 == 0 or steps == len(loader)):  # .item() syncs the GPU: not every step
            bar.set_postfix(loss=f"{total.item() / count:.4f}")
    total_sum, n = all_reduce_sum([float(total), float(count)], rt)
    return {"loss": total_sum / max(n, 1), "steps": steps}


@torch.no_grad()
def evaluate(model, loader, loss_fn, rt: Runtime) -> dict:
    """Validation loss and pixel Dice/IoU/precision/recall (threshold 0.5), pooled over all processes."""
    model.eval()
    sums = torch.zeros(6, dtype=torch.float64, device=rt.device)  # loss*n, n, tp, fp, fn, tn
    for x, y in tqdm(loader, desc="validate", disable=not rt.main, leave=False, dynamic_ncols=True):
        x, y = to_device(x, rt), y.to(rt.device, non_blocking=True)
        with torch.autocast(rt.device.type, dtype=rt.amp_dtype or torch.float32, enabled=rt.amp_dtype is not None):
            logits = model(x)
        pred, truth = logits.float() > 0, y > 0.5
        tp = (pred & truth).sum()
        fp = (pred & ~truth).sum()
        fn = (~pred & truth).sum()
        n = torch.tensor(x.shape[0], device=rt.device)
        parts = (loss_fn(logits, y) * x.shape[0], n, tp, fp, fn, pred.numel() - tp - fp - fn)
        sums += torch.stack([t.double() for t in parts])
    loss_n, n, tp, fp, fn, tn = all_reduce_sum(sums.tolist(), rt)
    scores = metrics.scores_from_counts(int(tp), int(fp), int(fn), int(tn))
    return {"loss": loss_n / max(n, 1), **{k: scores[k] for k in ("dice", "iou", "precision", "recall")}}


# --------------------------------------------------------------------------- outputs

CSV_COLUMNS = ("epoch", "train_loss", "val_loss", "dice", "iou", "precision", "recall", "lr", "seconds")


def plot_curves(path: Path, history: list[dict], title: str) -> None:
    """Loss (train, validation) and validation Dice per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax1.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax1.legend()
    ax2.plot(epochs, [r["dice"] for r in history], "o-", color="tab:green")
    ax2.set(xlabel="epoch", ylabel="Dice", title="validation Dice", ylim=(0, 1))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with tiffio.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- fit: model, starting point, loop

def load_matching(path: Path, model_args: dict, hint: str):
    """unet.load_model(path), refused unless its architecture is the one `model_args` asks for."""
    loaded, info = unet.load_model(path)
    if unet.model_args_of(loaded) != model_args:
        raise TrainingError(f"{path}: built with {unet.model_args_of(loaded)}, but the arguments ask for "
                            f"{model_args}; {hint}")
    return loaded, info


def setup_model(cfg: Config, task, rt: Runtime) -> unet.UNet:
    """A new network from the model flags and the task's first kernel, weights drawn from --seed, on the device."""
    model_args = dict(in_channels=1, out_channels=1, base_channels=cfg.base_channels, depth=cfg.depth,
                      first_kernel=task.first_kernel, dropout=cfg.dropout, batch_norm=True)
    torch.manual_seed(cfg.seed)
    model = unet.build_model(**model_args).to(rt.device)
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


@dataclass
class Loaders:
    """The training loader with its epoch sampler, and the validation loader."""

    train: DataLoader
    sampler: EpochSampler
    val: DataLoader


def make_loaders(cfg: Config, task, train_pairs, val_pairs, rt: Runtime) -> Loaders:
    """Augmented, cropped, shuffled training batches (sharded over DDP ranks); whole validation images."""
    train_set = SegmentationDataset(train_pairs, task, train=True, crop_size=cfg.crop_size, seed=cfg.seed)
    val_set = SegmentationDataset(val_pairs, task, train=False)
    sampler = EpochSampler(len(train_set), seed=cfg.seed, rank=rt.rank, world_size=rt.world_size)
    train = make_loader(train_set, cfg.batch_size, sampler, cfg.num_workers, rt.device)
    # whole images for validation: batch them only when they all have one size
    val_batch = cfg.batch_size if len(image_shapes(val_pairs)) == 1 else 1
    val = make_loader(val_set, val_batch, list(range(rt.rank, len(val_set), rt.world_size)), cfg.num_workers,
                      rt.device)
    return Loaders(train, sampler, val)


@dataclass
class Optimisation:
    """AdamW, its per-step warm-up/cosine schedule, and the fp16 grad scaler (a no-op otherwise)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


def make_optimisation(cfg: Config, model: nn.Module, steps_per_epoch: int, rt: Runtime) -> Optimisation:
    """A new optimizer and schedule over --epochs epochs of `steps_per_epoch` steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * steps_per_epoch
    scheduler = warmup_cosine(optimizer, total_steps, warmup_steps=max(1, min(500, total_steps // 20)))
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
    return Optimisation(optimizer, scheduler, scaler)


def resume_path(cfg: Config, out_dir: Path, fold: int | None) -> Path | None:
    """The last.pth this run continues from, or None for a new run.

    --resume alone means OUT_DIR/last.pth, --resume PATH that file; either must exist. With --folds each fold
    continues from its own last.pth, and a fold that has none yet starts afresh.
    """
    if cfg.resume is None:
        return None
    if fold is not None:
        path = out_dir / "last.pth"
        return path if path.is_file() else None
    path = out_dir / "last.pth" if cfg.resume == "last" else Path(cfg.resume)
    if not path.is_file():
        raise TrainingError(f"--resume: {path} not found")
    return path


def restore(cfg: Config, task: str, model: nn.Module, optim: Optimisation, out_dir: Path, fold: int | None,
            rt: Runtime) -> dict:
    """Put the run at its starting point: new, resumed (--resume) or fine-tuned (--init-weights).

    Resuming loads weights, optimizer, schedule and scaler from a last.pth; fine-tuning loads only the
    weights. Returns the loop state: epochs done, best Dice and its metrics, and the history rows.
    """
    state = {"epoch": 0, "best_dice": -1.0, "best_metrics": {}, "history": []}
    model_args = unet.model_args_of(model)
    resume_from = resume_path(cfg, out_dir, fold)
    if resume_from is not None:
        loaded, info = load_matching(resume_from, model_args, "resume with the same model flags")
        if "optimizer" not in info or info.get("task") != task:
            raise TrainingError(f"{resume_from}: not a {task} last.pth (no optimizer state); cannot resume")
        model.load_state_dict(loaded.state_dict())
        optim.optimizer.load_state_dict(info["optimizer"])
        optim.scheduler.load_state_dict(info["scheduler"])
        if info.get("scaler"):
            optim.scaler.load_state_dict(info["scaler"])
        state.update({k: info[k] for k in state if k in info})
        state["history"] = list(state["history"])
        if rt.main:
            print(f"resuming from {resume_from}: epoch {state['epoch']} done, best Dice {state['best_dice']:.4f}")
    elif cfg.init_weights is not None:
        init, init_info = load_matching(cfg.init_weights, model_args, "give the same model flags to fine-tune it")
        if init_info.get("task") not in (None, task):
            raise TrainingError(f"{cfg.init_weights}: a {init_info.get('task')} model, not a {task} model")
        model.load_state_dict(init.state_dict())
        if rt.main:
            print(f"starting from the weights of {cfg.init_weights} (new optimizer and schedule)")
    return state


def has_positive(pairs) -> bool:
    """True if any mask of `pairs` holds a foreground pixel (memory-mapped; stops at the first)."""
    return any(np.load(p[1], mmap_mode="r")[p[2] if len(p) > 2 else ...].any() for p in pairs)


def train_loop(cfg: Config, model: nn.Module, data: Loaders, optim: Optimisation, state: dict, out_dir: Path,
               rt: Runtime, checkpoint: dict, generator: dict | None = None, fold: int | None = None) -> dict:
    """Epochs state["epoch"] + 1 .. --epochs: train, validate, write best/last checkpoints, metrics.csv, curves.

    `checkpoint` holds the save_checkpoint arguments every checkpoint shares (task, normalisation, ...).
    Returns {"best": metrics of the best epoch, "last": metrics of the final epoch, "history": rows}.
    """
    task = checkpoint["task"]
    net = model
    if rt.world_size > 1:
        ids = [rt.device.index] if rt.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    loss_fn = SegmentationLoss(cfg.loss)
    optimizer, scheduler, scaler = optim.optimizer, optim.scheduler, optim.scaler
    teacher = cfg.teacher and distill.Teacher.load(cfg.teacher, tasks.TASKS[cfg.preset], rt, cfg.distill_weight)
    if teacher:  # the checkpoints record which teacher taught the run
        checkpoint = {**checkpoint, "train_args": {**checkpoint["train_args"], **teacher.record}}

    tag = f"fold {fold} " if fold is not None else ""
    best_path, last_path = out_dir / f"best_{task}_model.pth", out_dir / "last.pth"
    history = state["history"]
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        start = time.perf_counter()
        data.sampler.set_epoch(epoch)
        # dropout masks depend on (seed, epoch, rank) only, so a resumed run repeats them
        torch.manual_seed(int(np.random.SeedSequence((cfg.seed, epoch, rt.rank)).generate_state(1)[0]))
        lr = optimizer.param_groups[0]["lr"]
        train = train_one_epoch(net, data.train, loss_fn, optimizer, scheduler, scaler, rt,
                                desc=f"{tag}epoch {epoch}/{cfg.epochs}", teacher=teacher)
        if rt.world_size > 1:  # evaluate every shard with rank 0's batch-norm statistics
            for buf in model.buffers():
                dist.broadcast(buf, 0)
        val = evaluate(model, data.val, loss_fn, rt)
        bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad or not math.isfinite(val["loss"]):  # a NaN model must never become best_*.pth or last.pth
            kept = (f"{best_path.name} keeps epoch {state['best_metrics']['epoch']}" if state["best_metrics"]
                    else "no model saved")
            raise Diverged(f"{tag}training diverged at epoch {epoch} (train loss {train['loss']:.4g}, validation "
                           f"loss {val['loss']:.4g}{', weights not finite' if bad else ''}); {kept}; lower --lr "
                           f"(now {cfg.lr:g}) or try --precision fp32")
        row = {"epoch": epoch, "train_loss": train["loss"], "val_loss": val["loss"],
               **{k: val[k] for k in METRIC_KEYS[1:]}, "lr": lr, "seconds": time.perf_counter() - start,
               "steps": train["steps"]}
        history.append(row)
        improved = val["dice"] > state["best_dice"]
        if improved:
            state["best_dice"], state["best_metrics"] = val["dice"], {**val, "epoch": epoch}
        state["epoch"] = epoch
        if rt.main:
            if improved:
                unet.save_checkpoint(best_path, model, metrics=state["best_metrics"], **checkpoint)
            unet.save_checkpoint(last_path, model, metrics={**val, "epoch": epoch}, **checkpoint, extra={
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch, "best_dice": state["best_dice"],
                "best_metrics": state["best_metrics"], "history": history, "world_size": rt.world_size,
                "generator": generator or {}})
            tiffio.write_csv(out_dir / "metrics.csv", history, CSV_COLUMNS)
            plot_curves(out_dir / "curves.png", history, f"{task} U-Net{' ' + tag.strip() if tag else ''}")
            print(f"{tag}epoch {epoch}/{cfg.epochs}  train loss {train['loss']:.4f}  val loss {val['loss']:.4f}  "
                  f"Dice {val['dice']:.4f}  IoU {val['iou']:.4f}  precision {val['precision']:.4f}  "
                  f"recall {val['recall']:.4f}  {row['seconds']:.0f}s{'  *best' if improved else ''}", flush=True)
    if rt.main and history:
        b = state["best_metrics"]
        print(f"{tag}best validation Dice {b['dice']:.4f} at epoch {b['epoch']} -> {best_path}")
    last = history[-1] if history else {}
    final = {"loss": last.get("val_loss"), **{k: last.get(k) for k in METRIC_KEYS[1:]}, "epoch": last.get("epoch")}
    return {"best": state["best_metrics"], "history": history, "last": final}


def fit(cfg: Config, task, train_pairs, val_pairs, out_dir: Path, rt: Runtime, pixel_size_um,
        generator: dict | None = None, fold: int | None = None) -> dict:
    """Train on train_pairs, validate on val_pairs each epoch, write checkpoints to out_dir; returns the summary.

    The steps: model set-up, loaders, optimiser, starting point (new, --resume or --init-weights), the loop.
    Summary: {"best": metrics of the best epoch, "last": metrics of the final epoch, "history": rows}.
    """
    out_dir = Path(out_dir)
    model = setup_model(cfg, task, rt)
    data = make_loaders(cfg, task, train_pairs, val_pairs, rt)
    optim = make_optimisation(cfg, model, len(data.train), rt)
    state = restore(cfg, task.name, model, optim, out_dir, fold, rt)
    checkpoint = dict(task=task.name, normalization=task.normalization, pixel_size_um=pixel_size_um,
                      train_args=cfg.record())
    return train_loop(cfg, model, data, optim, state, out_dir, rt, checkpoint, generator, fold)


def kfold_splits(n: int, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K (train, held-out) index splits of range(n) after a seeded shuffle; folds differ in size by <= 1."""
    if k < 2:
        raise TrainingError(f"--folds {k}: need at least 2 folds")
    if n < k:
        raise TrainingError(f"--folds {k}: only {n} training images, need at least one per fold")
    folds = np.array_split(np.random.default_rng(seed).permutation(n), k)
    return [(np.sort(np.concatenate(folds[:i] + folds[i + 1:])), np.sort(folds[i])) for i in range(k)]


def summarize_folds(rows: list[dict]) -> list[dict]:
    """Append "mean" and "std" (sample standard deviation, ddof=1) rows to per-fold metric rows."""
    table = np.array([[r[k] for k in METRIC_KEYS] for r in rows], dtype=float)
    mean = dict(zip(METRIC_KEYS, table.mean(axis=0)))
    std = dict(zip(METRIC_KEYS, table.std(axis=0, ddof=1) if len(rows) > 1 else np.zeros(len(METRIC_KEYS))))
    return rows + [{"fold": "mean", **mean}, {"fold": "std", **std}]


# --------------------------------------------------------------------------- command line

def get_args_parser(preset_name: str, description: str | None = None) -> argparse.ArgumentParser:
    """The command line shared by both training scripts; `preset_name` (a tasks.TASKS key) sets the task defaults."""
    task = tasks.TASKS[preset_name]
    parser = argparse.ArgumentParser(description=description, formatter_class=cli.HelpFormatter)
    parser.set_defaults(preset=preset_name)
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", "--data_dir", type=Path, default=None,
                      help="dataset root with train/img, train/mask, val/img, val/mask and generator.json; "
                           "the four folder flags below override its parts")
    for split in ("train", "val"):
        for kind, what in (("img", "images"), ("mask", "masks (NAME.npy for image NAME.*)")):
            data.add_argument(f"--{split}-{kind}-dir", f"--{split}_{kind}_dir", type=Path, default=None,
                              help=f"{'training' if split == 'train' else 'validation'} {what}; "
                                   f"without it, DATA_DIR/{split}/{kind}")
    data.add_argument("--pixel-size", type=cli.finite_float(above=0.0), default=None,
                      help="pixel size of the training images in um, stored in the checkpoint; "
                           "without it, pixel_size_um from generator.json")
    model = parser.add_argument_group("model")
    model.add_argument("--base-channels", type=cli.finite_int(low=1), default=64, help="first-level channels")
    model.add_argument("--depth", type=cli.finite_int(low=1), default=3, help="number of down-sampling levels")
    model.add_argument("--dropout", type=cli.finite_float(low=0.0, below=1.0), default=0.0,
                       help="dropout rate at the end of the bottleneck block")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=cli.finite_int(low=1), default=50, help="total epochs (also with --resume)")
    train.add_argument("--batch-size", "--batch_size", type=cli.finite_int(low=1), default=4,
                       help="samples per step and per process")
    train.add_argument("--lr", type=cli.finite_float(above=0.0), default=1e-3,
                       help="peak learning rate of AdamW (warm-up, then cosine)")
    train.add_argument("--weight-decay", type=cli.finite_float(low=0.0), default=1e-4, help="AdamW weight decay")
    train.add_argument("--loss", choices=LOSSES, default=task.loss,
                       help="bce+cldice adds the skeleton-aware clDice term for thin filaments")
    train.add_argument("--crop-size", type=cli.finite_int(low=0), default=256,
                       help="random square training crops in px (0: whole images, which must share one size); "
                            "validation always uses whole images")
    train.add_argument("--folds", type=cli.finite_int(low=0), default=0,
                       help="K >= 2: K-fold cross-validation over the training set (validation folders unused); "
                            "writes OUTPUT_DIR/foldK/ and folds.csv with mean and spread")
    train.add_argument("--seed", type=int, default=0, help="seed for weights, shuffling and augmentation")
    train.add_argument("--resume", nargs="?", const="last", default=None, metavar="PATH",
                       help="continue from PATH, or from OUTPUT_DIR/last.pth when given alone, with "
                            "optimizer, schedule and epoch")
    train.add_argument("--init-weights", type=Path, default=None, metavar="PATH",
                       help="fine-tune: start from the weights of this checkpoint (same model flags), with a "
                            f"new optimizer and learning-rate schedule, e.g. models/{task.name}.pth on new data")
    train.add_argument("--teacher", type=Path, default=None, metavar="PATH",
                       help="distil: a trained model of this task whose probabilities are blended into the targets")
    train.add_argument("--distill-weight", type=cli.finite_float(above=0.0, high=1.0), default=0.5,
                       help="with --teacher: target = (1 - W) x mask + W x teacher probability")
    hw = parser.add_argument_group("hardware")
    hw.add_argument("--device", default="cuda", help="cuda, cuda:N, cpu, mps or auto")
    hw.add_argument("--precision", choices=PRECISIONS, default="auto",
                    help="auto: bf16 on CUDA and on CPUs with native bf16, fp16 on older CUDA, else fp32")
    hw.add_argument("--num-workers", "--num_workers", type=cli.finite_int(low=0), default=4,
                    help="data-loading processes; lowered to the usable CPU cores when above them")
    out = parser.add_argument_group("output")
    out.add_argument("--output-dir", "--output_dir", type=Path, default=Path("checkpoints"),
                     help=f"where best_{preset_name}_model.pth, last.pth, metrics.csv and curves.png go; a folder "
                          "holding an earlier run needs --resume or --overwrite")
    out.add_argument("--overwrite", action="store_true",
                     help="start a new run in an --output-dir that holds an earlier one, replacing its files")
    return parser


def resolve_folders(cfg: Config) -> dict[str, Path | None]:
    """The four data folders from --data-dir and/or the explicit flags."""
    folders = {}
    for split in ("train", "val"):
        for kind in ("img", "mask"):
            key = f"{split}_{kind}_dir"
            value = getattr(cfg, key)
            if value is None and cfg.data_dir is not None:
                value = cfg.data_dir / split / kind
            folders[key] = value
    needed = [k for k in folders if k.startswith("train") or not cfg.folds]
    missing = [f"--{k.replace('_', '-')}" for k in needed if folders[k] is None]
    if missing:
        raise TrainingError(f"missing {', '.join(missing)}; give --data-dir DATA or all of them")
    return folders


def resolve_pixel_size(cfg: Config, generator: dict) -> float | None:
    """--pixel-size, else generator.json's pixel_size_um, else None (with a warning)."""
    if cfg.pixel_size is not None:
        return float(cfg.pixel_size)
    if generator.get("pixel_size_um") is not None:
        return float(generator["pixel_size_um"])
    print("warning: no pixel size (no generator.json with pixel_size_um, no --pixel-size); the checkpoint "
          "will not let prediction rescale images of another pixel size", file=sys.stderr)
    return None


def check_args(cfg: Config) -> None:
    """Reject values that would fail later or silently do nothing."""
    if cfg.folds == 1 or cfg.folds < 0:  # the other numbers are checked while parsing (cli.number)
        raise TrainingError(f"--folds {cfg.folds}: use 0 (off) or K >= 2")
    if cfg.resume is not None and cfg.init_weights is not None:
        raise TrainingError("--resume and --init-weights exclude each other: --resume continues a run, "
                            "--init-weights starts a new one from a model's weights")
    for flag, path in (("--init-weights", cfg.init_weights), ("--teacher", cfg.teacher)):
        if path is not None and not Path(path).is_file():
            raise TrainingError(f"{flag}: {path} not found")
    if cfg.folds and cfg.resume not in (None, "last"):
        raise TrainingError("with --folds, use --resume alone: each fold resumes from its own last.pth")


RUN_FILES = ("last.pth", "metrics.csv", "folds.csv", "curves.png")  # with best_<task>_model.pth


def earlier_run(out_dir: Path) -> list[Path]:
    """Files an earlier training run left in `out_dir` or its foldK/ folders (checkpoints, metrics, curves)."""
    out_dir = Path(out_dir)
    folders = [out_dir] + sorted(p for p in out_dir.glob("fold*") if p.is_dir()) if out_dir.is_dir() else []
    return [p for d in folders for p in sorted(d.iterdir())
            if p.is_file() and (p.name in RUN_FILES or (p.name.startswith("best_") and p.suffix == ".pth"))]


def check_output_dir(cfg: Config) -> None:
    """Refuse, before any work, to replace an earlier run's models unless --resume or --overwrite says so, and an
    --output-dir that is a file or cannot be written."""
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise TrainingError(f"--output-dir {out}: is a file; give a folder for the checkpoints")
    found = earlier_run(out)
    if found and cfg.resume is None and not cfg.overwrite:
        names = ", ".join(str(p.relative_to(out)) for p in found[:4]) + (", ..." if len(found) > 4 else "")
        raise TrainingError(f"--output-dir {out}: holds an earlier run ({names}); pass --resume to continue it, "
                            "--overwrite to replace it, or another --output-dir")
    base = next(p for p in [out, *out.absolute().parents] if p.exists())  # the folder is made at the first save
    if not base.is_dir():
        raise TrainingError(f"--output-dir {out}: {base} is a file, not a folder")
    try:
        tiffio.check_writable(base)
    except OSError as err:
        raise TrainingError(f"--output-dir {out}: cannot write there ({err.strerror or type(err).__name__})") from None


def run(cfg: Config, rt: Runtime) -> int:
    """Check data, then train once or K times (k-fold); returns the exit code."""
    task = tasks.TASKS[cfg.preset]
    check_output_dir(cfg)  # every rank: nothing is written before all of them have looked
    folders = resolve_folders(cfg)
    generator = read_generator_info(*[p for p in (cfg.data_dir, folders["train_img_dir"].parent.parent) if p])
    train_pairs = find_pairs(folders["train_img_dir"], folders["train_mask_dir"], show=rt.main)
    if not has_positive(train_pairs):
        raise TrainingError(f"{folders['train_mask_dir']}: no training mask holds a single foreground pixel; check "
                            "the masks (0 background, >0 object)")
    if cfg.crop_size == 0 and len(image_shapes(train_pairs)) > 1:
        raise TrainingError("training images differ in size; give --crop-size so they can be batched")
    if not cfg.folds:
        val_pairs = find_pairs(folders["val_img_dir"], folders["val_mask_dir"], show=rt.main)
        if not has_positive(val_pairs):  # validation Dice would read 1.0 for a network that finds nothing
            raise TrainingError(f"{folders['val_mask_dir']}: no validation mask holds a single foreground pixel")
    # warnings only once the data is known to be usable: never a warning printed just before the error
    pixel_size = resolve_pixel_size(cfg, generator) if rt.main else cfg.pixel_size or generator.get("pixel_size_um")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cfg.num_workers > cores:  # torch warns (per loader) and the extra processes only wait
        if rt.main:
            print(f"--num-workers {cfg.num_workers}: using {cores} (the usable CPU cores)", file=sys.stderr)
        cfg = dataclasses.replace(cfg, num_workers=cores)
    if rt.main:
        print(rt.describe())
        if rt.device.type == "cpu" and rt.amp_dtype is None and cfg.precision == "auto":
            print("precision: fp32 (this CPU has no native bf16; --precision bf16 would only emulate it)")

    if not cfg.folds:
        if rt.main:
            print(f"{len(train_pairs)} training and {len(val_pairs)} validation images, task {task.name}, "
                  f"loss {cfg.loss}, normalisation {task.normalization}, pixel size {pixel_size} um")
        fit(cfg, task, train_pairs, val_pairs, cfg.output_dir, rt, pixel_size, generator)
        return 0

    rows = []
    for k, (tr, ho) in enumerate(kfold_splits(len(train_pairs), cfg.folds, cfg.seed), start=1):
        fold_dir = cfg.output_dir / f"fold{k}"
        if rt.main:
            print(f"fold {k}/{cfg.folds}: {len(tr)} training, {len(ho)} held-out images -> {fold_dir}")
        summary = fit(cfg, task, [train_pairs[i] for i in tr], [train_pairs[i] for i in ho], fold_dir, rt,
                      pixel_size, generator, fold=k)
        rows.append({"fold": k, **summary["last"]})
    table = summarize_folds(rows)
    if rt.main:
        tiffio.write_csv(cfg.output_dir / "folds.csv", table, ("fold", "epoch") + METRIC_KEYS)
        mean, std = table[-2], table[-1]
        print(f"{cfg.folds}-fold cross-validation (final epoch of each fold, mean +- std over folds): " + "  ".join(
            f"{k} {mean[k]:.4f} +- {std[k]:.4f}" for k in METRIC_KEYS) + f"  -> {cfg.output_dir / 'folds.csv'}")
    return 0


def main(args: argparse.Namespace) -> int:
    """Print the arguments, set up device/DDP, train; one-line error and exit code 2 on bad input."""
    rank = int(os.environ.get("RANK", "0"))
    tiffio.readable_output()  # a name that is not UTF-8 is spelled one way, tiffio.shown's
    cfg = Config.from_args(args)
    if rank == 0:
        print("arguments:\n" + "\n".join(f"  {k:<16} {v}" for k, v in sorted(cfg.record().items())), flush=True)
    rt = None
    try:
        check_args(cfg)
        rt = setup_runtime(cfg.device, cfg.precision)
        return run(cfg, rt)
    except (DatasetError, TrainingError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1 if isinstance(err, Diverged) else 2
    except tiffio.WriteError as err:  # disk full or read-only mid-run: the files written before are whole
        print(f"error: {err}; the files written before are kept - free space, then --resume", file=sys.stderr)
        return 1
    finally:
        if rt is not None and rt.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
