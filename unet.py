"""The SynSeg U-Net, its checkpoint format and device choice (input normalisation: normalization.py).

The network follows Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image
Segmentation" (MICCAI 2015), in the configuration of the original SynSeg models: two convs per
block with batch norm, max-pool down, ConvTranspose2d up, and a 1x1 head that returns logits.

    model = build_model(base_channels=64, depth=3, first_kernel=5)  # original cytoskeleton net
    save_checkpoint("m.pth", model, task="cytoskeleton", normalization={"mode": "standardize"})
    model, info = load_model("m.pth")                               # also takes bare original weights

build_model, not UNet(...), makes a network for save_checkpoint: it records the arguments that rebuild it.
"""
from __future__ import annotations

import contextlib
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from synseg import tasks

CHECKPOINT_FORMAT = "synseg-unet/1"


class ConvBlock(nn.Sequential):
    """conv(k) -> BN -> ReLU -> [dropout] -> conv(3) -> BN -> ReLU.

    Indices 0,1,3,4 hold the weights, as in the original SynSeg blocks, so their state dicts load.
    """

    def __init__(self, c_in: int, c_out: int, first_kernel: int = 3, batch_norm: bool = True,
                 dropout: float = 0.0):
        norm = (lambda c: nn.BatchNorm2d(c)) if batch_norm else (lambda c: nn.Identity())
        super().__init__(
            nn.Conv2d(c_in, c_out, first_kernel, padding=first_kernel // 2, bias=True),
            norm(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=True),
            norm(c_out),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
        )


class UNet(nn.Module):
    """2D U-Net returning logits of the same height and width as the input.

    Inputs of any size are padded (reflect) up to a multiple of 2**depth and the output cropped
    back, so odd sizes work.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base_channels: int = 64,
                 depth: int = 3, first_kernel: int = 3, dropout: float = 0.0,
                 batch_norm: bool = True):
        super().__init__()
        if depth < 1 or base_channels < 1:
            raise ValueError(f"depth and base_channels must be >= 1, got {depth}, {base_channels}")
        if first_kernel % 2 != 1:
            raise ValueError(f"first_kernel must be odd, got {first_kernel}")
        self.depth = depth
        ch = [base_channels * 2 ** i for i in range(depth + 1)]  # e.g. 64,128,256,512
        kw = dict(first_kernel=first_kernel, batch_norm=batch_norm)
        for i in range(depth):
            setattr(self, f"enc{i + 1}", ConvBlock(in_channels if i == 0 else ch[i - 1], ch[i], **kw))
        self.bottleneck = ConvBlock(ch[depth - 1], ch[depth], dropout=dropout, **kw)
        for i in range(depth, 0, -1):
            setattr(self, f"up{i}", nn.ConvTranspose2d(ch[i], ch[i - 1], kernel_size=2, stride=2))
            setattr(self, f"dec{i}", ConvBlock(2 * ch[i - 1], ch[i - 1], **kw))
        self.final = nn.Conv2d(ch[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]  # x: (B, C, H, W)
        m = 2 ** self.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if (ph < h and pw < w) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        skips = []
        for i in range(1, self.depth + 1):
            x = getattr(self, f"enc{i}")(x if i == 1 else F.max_pool2d(x, 2))
            skips.append(x)  # (B, base*2**(i-1), H/2**(i-1), W/2**(i-1))
        x = self.bottleneck(F.max_pool2d(x, 2))  # (B, base*2**depth, H/2**depth, W/2**depth)
        for i in range(self.depth, 0, -1):
            x = getattr(self, f"up{i}")(x)
            x = getattr(self, f"dec{i}")(torch.cat((x, skips[i - 1]), dim=1))
        return self.final(x)[..., :h, :w]  # (B, out, H, W) logits


def receptive_radius(model_args: dict) -> int:
    """Exact receptive-field radius in px of UNet: how far an output pixel sees into the input.

    Each ConvBlock (k x k then 3 x 3 conv) reaches k//2 + 1 px at its own scale 2**level; the encoder,
    bottleneck and decoder visit scales 1..2**(depth-1), 2**depth and 2**(depth-1)..1, and the pooling
    steps add 2**depth - 1. Checked against autograd in tests/test_unet.py.
    """
    depth = int(model_args.get("depth", 3))
    reach = int(model_args.get("first_kernel", 3)) // 2 + 1
    return reach * (2 * (2 ** depth - 1) + 2 ** depth) + 2 ** depth - 1


# --------------------------------------------------------------------------- devices

def get_device(name: str = "auto", verbose: bool = True) -> torch.device:
    """Resolve 'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'.

    Asking for a device that is not there is an error, never a silent fallback.
    """
    name = str(name).lower()
    if name == "auto":
        if torch.cuda.is_available():
            dev = torch.device("cuda")
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            dev = torch.device("mps")
        else:
            dev = torch.device("cpu")
        if verbose:
            print(f"device: auto -> {dev}", file=sys.stderr)
        return dev
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {name}: CUDA is not available on this machine; "
                               "use --device cpu or --device auto")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise RuntimeError("--device mps: MPS is not available on this machine; use --device cpu or --device auto")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"--device {name!r} not understood; use auto, cpu, cuda, cuda:N or mps")


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix units (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
        return ("avx512_bf16" in flags) or ("amx_bf16" in flags)
    except OSError:
        return False


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The dtype to autocast to on `device` ('auto', 'bf16', 'fp16' or 'fp32'); None means fp32.

    auto: bf16 on CUDA with bf16 support and on CPUs with native bf16, fp16 on older CUDA,
    fp32 elsewhere.
    """
    precision = precision.lower()
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision != "auto":
        raise ValueError(f"precision {precision!r} not understood; use auto, bf16, fp16 or fp32")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


# --------------------------------------------------------------------------- checkpoints

def _plain(value):
    """Turn argparse values (Paths, tuples, numpy scalars) into types weights_only loading accepts."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def model_args_of(model: UNet) -> dict:
    """The constructor arguments that rebuild `model`."""
    return dict(model.model_args)


def build_model(**model_args) -> UNet:
    """Build a UNet and remember its arguments for the checkpoint."""
    model = UNet(**model_args)
    model.model_args = dict(model_args)
    return model


def save_checkpoint(path, model: nn.Module, *, task: str, normalization: dict,
                    pixel_size_um: float | None = None, train_args: dict | None = None,
                    metrics: dict | None = None, extra: dict | None = None) -> None:
    """Write weights plus everything needed to use them, atomically (temp file, then rename)."""
    if task not in tasks.TASKS:
        raise ValueError(f"task must be one of {tuple(tasks.TASKS)}, got {task!r}")
    net = getattr(model, "module", model)  # unwrap DDP
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "model_args": _plain(net.model_args),
        "task": task,
        "normalization": _plain(normalization),
        "pixel_size_um": None if pixel_size_um is None else float(pixel_size_um),
        "train_args": _plain(train_args or {}),
        "metrics": _plain(metrics or {}),
    }
    if extra:  # e.g. optimizer/scheduler state for --resume; tensors and plain containers only
        ckpt.update(extra)
    _save_atomic(ckpt, path)


def _save_atomic(obj, path) -> None:
    """torch.save through tiffio.atomic_path: a failed write (a full disk makes torch's zip writer raise
    RuntimeError) is one tiffio.WriteError naming the file and the reason, and no temporary file stays."""
    from synseg import tiffio

    path = Path(path)
    with tiffio.atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as err:
            raise tiffio.WriteError(path, tiffio.write_reason(err, path.parent)) from None


def export_half(src, dst) -> None:
    """Copy a checkpoint with its floating-point weights stored as float16 (half the file size).

    For shipping models: load_model casts them back to float32, so predictions change only by
    float16 rounding of the weights. Optimizer state (last.pth) is dropped.
    """
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    if not (isinstance(ckpt, dict) and "state_dict" in ckpt):
        raise ValueError(f"{src}: not a SynSeg checkpoint (no state_dict)")
    keep = {k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler", "scaler")}
    keep["state_dict"] = {k: (v.half() if v.is_floating_point() else v) for k, v in ckpt["state_dict"].items()}
    _save_atomic(keep, dst)


def infer_model_args(state_dict: dict) -> dict:
    """Recover UNet arguments from the tensor shapes of a state dict (original or ours)."""
    try:
        w0 = state_dict["enc1.0.weight"]  # (base, in, k, k)
        final = state_dict["final.weight"]  # (out, base, 1, 1)
    except KeyError as err:
        raise ValueError(f"not a SynSeg U-Net state dict: missing key {err}") from None
    depth = 0
    while f"enc{depth + 1}.0.weight" in state_dict:
        depth += 1
    return {
        "in_channels": int(w0.shape[1]),
        "out_channels": int(final.shape[0]),
        "base_channels": int(w0.shape[0]),
        "depth": depth,
        "first_kernel": int(w0.shape[-1]),
        "batch_norm": "enc1.1.running_mean" in state_dict,
    }


def load_model(path, device: torch.device | str = "cpu") -> tuple[UNet, dict]:
    """Load a SynSeg checkpoint or a bare original SynSeg state dict; returns (model in eval mode, info).

    Loading never runs code from the file (weights_only=True). `info` holds task, normalization,
    pixel_size_um, model_args, train_args and metrics; for bare state dicts the task is inferred
    from the first kernel (5x5: cytoskeleton, 3x3: vesicle) and the original normalisation is used.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    with open(path, "rb") as fh:
        head = fh.read(4)
    # torch.save writes a zip archive (older versions: a bare pickle, protocol 2 and up, starts with 0x80)
    pickled = head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    if not (head.startswith(b"PK\x03\x04") or pickled):
        what = "an empty file" if not head else "neither a zip archive nor a pickle"
        raise ValueError(f"{path}: not a PyTorch checkpoint ({what}); pass a .pth written by the training scripts "
                         "or an original SynSeg model")
    if head.startswith(b"PK\x03\x04"):
        import zipfile

        with contextlib.suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if any(Path(n).name in ("rdf.yaml", "bioimageio.yaml") for n in names):
                raise ValueError(f"{path}: is a bioimage.io package, not a checkpoint; pass the .pth it was exported "
                                 "from, or open the package in a bioimage.io tool (deepImageJ, ilastik, napari)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        blocked = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(err))
        if blocked is None and not pickled:
            raise ValueError(f"{path}: not a readable PyTorch checkpoint (damaged or not a checkpoint)") from None
        raise ValueError(f"{path}: refused to load: the file holds Python objects "
                         f"({blocked.group(1) if blocked else 'not only tensors'}), not only weights; loading it could "
                         "run code (weights_only=True). Save model.state_dict() instead") from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for corrupt files
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a checkpoint dict or a state dict, got {type(obj).__name__}")
    if "state_dict" in obj and "model_args" in obj:
        state, model_args = obj["state_dict"], dict(obj["model_args"])
        info = {k: v for k, v in obj.items() if k != "state_dict"}
    elif all(torch.is_tensor(v) for v in obj.values()):
        state = obj
        try:
            model_args = infer_model_args(state)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        task = tasks.for_original_weights(model_args["first_kernel"])
        info = {"format": "original-synseg", "task": task.name, "normalization": task.original_normalization,
                "pixel_size_um": None, "model_args": model_args, "train_args": {}, "metrics": {}}
    else:
        raise ValueError(f"{path}: a dict without 'state_dict'/'model_args' that is not a state dict either")
    model = build_model(**model_args)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        msg = lines[1] if len(lines) > 1 else lines[0] if lines else type(err).__name__  # the first key and shapes
        raise ValueError(f"{path}: weights do not fit the recorded architecture {model_args}: {msg}") from None
    model.eval().to(device)
    return model, info
