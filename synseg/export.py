"""Export a SynSeg checkpoint as a bioimage.io model package (Fiji/deepImageJ, ilastik, QuPath, napari) or as ONNX.

Example:
    python export_model.py models/vesicle.pth -o exports/synseg-vesicle.zip --check

The package (bioimage.io model format 0.5) holds:
  - the weights three ways: a PyTorch state dict (with unet.py as the architecture), TorchScript and ONNX;
  - a test input (a synthetic image from the task's generator, or --test-image) and the matching test output;
  - the checkpoint's normalisation written as bioimage.io preprocessing (percentile -> scale_range,
    standardize -> zero_mean_unit_variance), or, for the local-contrast models (mode 'local', the shipped
    ones), computed inside the exported graph (export_graph.LocalContrastNet: grey-opening background, fitted
    noise, asinh as torch ops), so the package reads the raw image; the sigmoid as postprocessing, so the
    network's logits become the foreground probability;
  - the pixel size the model expects, the axes (batch, channel, y, x), tile-size hints (a minimum tile
    and a step of 2**depth) and the halo (the network's receptive radius, rounded up to that step: output
    pixels closer than the radius to a tile edge saw the edge);
  - a cover image, a README (what the model segments, how it was trained, its scores, the threshold),
    the license and the citation.
Everything comes from the checkpoint (unet.save_checkpoint metadata); for the shipped models the
held-out scores are copied from models/README.md.

The package is validated with bioimageio.spec after writing; --check also runs bioimageio.core's test
(the model on the test input reproduces the test output, for every weight format). The description names
no URL, so neither step fetches anything.

--format onnx writes the ONNX file alone. Both formats check ONNX Runtime (and TorchScript) against
PyTorch on a tile of odd size and stop if they differ by more than 1e-4.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from synseg import cli
from synseg import tiffio
from synseg.tasks import TASKS

ONNX_OPSET = 17
TOLERANCE = 1e-4  # max |exported - PyTorch| on a random tile
UNET_CITATION = {"text": "Ronneberger O., Fischer P., Brox T. U-Net: Convolutional Networks for Biomedical "
                         "Image Segmentation. MICCAI 2015.",
                 "doi": "10.1007/978-3-319-24574-4_28"}


# --------------------------------------------------------------------------- sizes

def size_hints(model_args: dict) -> tuple[int, int, int]:
    """(halo, minimum tile, step) in px: tiles are min + n * step; the minimum keeps a core past both halos.

    The halo is the receptive radius rounded up to a multiple of the step: consumers pad the image by the
    halo and cut blocks whose offsets are sums of halos and steps, and any offset off the 2**depth pooling
    grid changes what the U-Net returns (a marginal spot can flip), not only near the edges.
    """
    import unet

    step = 2 ** int(model_args.get("depth", 3))
    halo = -(-unet.receptive_radius(model_args) // step) * step
    return halo, 2 * halo + step, step


def valid_size(requested: int, minimum: int, step: int) -> int:
    """The smallest allowed tile edge (minimum + n * step) that is at least `requested`."""
    return minimum + max(0, -(-(requested - minimum) // step)) * step


# --------------------------------------------------------------------------- test image and prediction

def synthetic_image(task: str, size: int, pixel_size_um: float | None, seed: int) -> np.ndarray:
    """One size x size image from the task's own generator (the kind of image the model was trained on)."""
    import importlib

    from synseg.generate import synth

    generator = importlib.import_module(TASKS[task].generator_module)
    argv = ["--output-dir", "unused", "--image-size", str(size)]  # render_one writes nothing
    if pixel_size_um:
        argv += ["--pixel-size", str(pixel_size_um)]
    gen_args = generator.get_args_parser().parse_args(argv)
    image, _, _ = generator.render_one(synth.image_rng(seed, 0), gen_args)
    return image


def image_crop(path: Path, size: int) -> np.ndarray:
    """The central size x size crop of a 2D image file."""
    from synseg import tiffio

    image, meta = tiffio.read_image(path)
    if image.ndim != 2:
        raise ValueError(f"{path}: test image must be 2D (YX), got axes {meta['axes']} and shape {image.shape}")
    h, w = image.shape
    if min(h, w) < size:
        raise ValueError(f"{path}: {h}x{w} is smaller than the test tile {size}x{size}; "
                         f"give a larger image or a smaller --test-size")
    y, x = (h - size) // 2, (w - size) // 2
    return image[y:y + size, x:x + size]


def probability(model, image: np.ndarray, normalization: dict) -> np.ndarray:
    """Sigmoid of the network on one whole 2D image, normalised as in training: float32 (H, W)."""
    import torch

    from synseg.normalization import normalize_image

    x = torch.from_numpy(normalize_image(image, normalization))[None, None]
    with torch.inference_mode():
        return torch.sigmoid(model(x))[0, 0].numpy()


def cover_image(image: np.ndarray, prob: np.ndarray, height: int = 256) -> np.ndarray:
    """Input (grey, stretched) beside the probability (magma): a 2:1 RGB picture."""
    import cv2

    from synseg import tiffio

    grey = cv2.cvtColor((tiffio.stretch(image) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    heat = cv2.applyColorMap((np.clip(prob, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_MAGMA)
    both = [cv2.resize(p, (height, height), interpolation=cv2.INTER_AREA) for p in (grey, heat)]
    return np.hstack(both)


# --------------------------------------------------------------------------- exported networks

def trace(model, example):
    """TorchScript of the network, traced on a tile of odd size.

    unet.UNet pads to a multiple of 2**depth with Python-side branches; tracing on an odd tile records
    the padding (sizes stay symbolic), and zero padding of an aligned tile is a no-op, so the trace
    serves every size from 2**depth up. check_exports compares it with PyTorch at another size.
    """
    import torch

    with warnings.catch_warnings():  # TracerWarning for those branches, and jit's deprecation notice
        warnings.simplefilter("ignore")
        return torch.jit.trace(model, example, check_trace=False)


def export_onnx(model, example, path: Path) -> None:
    """ONNX file of the network (legacy TorchScript-based exporter) with free batch, y and x sizes."""
    import torch

    axes = {0: "batch", 2: "y", 3: "x"}
    with warnings.catch_warnings():  # same tracer warnings as in trace()
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": axes, "output": axes})


def check_exports(model, shape: tuple[int, ...], *, onnx_path: Path | None = None, script=None,
                  seed: int = 0) -> dict:
    """Max |exported - PyTorch| of the logits on a random tile of `shape` (B, 1, H, W), per format."""
    import torch

    x = torch.from_numpy(np.random.default_rng(seed).normal(size=shape).astype(np.float32))
    with torch.inference_mode():
        ref = model(x).numpy()
        diffs = {}
        if script is not None:
            diffs["torchscript"] = float(np.abs(script(x).numpy() - ref).max())
    if onnx_path is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        diffs["onnx"] = float(np.abs(session.run(None, {"input": x.numpy()})[0] - ref).max())
    return diffs


def require_close(diffs: dict, shape) -> None:
    """Stop when an exported network differs from PyTorch by more than TOLERANCE."""
    bad = {k: v for k, v in diffs.items() if not v <= TOLERANCE}
    if bad:
        raise RuntimeError(f"exported network differs from PyTorch on a {shape} tile: {bad} (allowed {TOLERANCE})")


def odd_shapes(minimum: int, step: int) -> tuple[tuple, tuple]:
    """(tile to trace on, different tile to check on): batch 1 and 2, odd heights and widths."""
    return (1, 1, minimum + 1, minimum + 3), (2, 1, minimum + step + 5, minimum + 2 * step + 1)


# --------------------------------------------------------------------------- description

def preprocessing(normalization: dict) -> list:
    """normalization.normalize_image's rule as bioimage.io preprocessing, per image over y and x."""
    from bioimageio.spec.model import v0_5 as bio

    axes = [bio.AxisId("y"), bio.AxisId("x")]
    mode = normalization.get("mode", "standardize")
    if mode == "standardize":
        return [bio.ZeroMeanUnitVarianceDescr(kwargs=bio.ZeroMeanUnitVarianceKwargs(axes=axes))]
    if mode == "percentile":  # normalization.normalize_image's default percentiles where the spec leaves them out
        return [bio.ScaleRangeDescr(kwargs=bio.ScaleRangeKwargs(
            axes=axes, min_percentile=float(normalization.get("low", 1.0)),
            max_percentile=float(normalization.get("high", 99.8))))]
    if mode == "minmax255":
        return [bio.ScaleRangeDescr(kwargs=bio.ScaleRangeKwargs(axes=axes, min_percentile=0.0, max_percentile=100.0)),
                bio.ScaleLinearDescr(kwargs=bio.ScaleLinearKwargs(gain=255.0))]
    why = {"median": "it divides by the median of the positive pixels",
           "local": "it subtracts a grey-opening background and divides by a noise model fitted to the image"}
    raise ValueError(f"normalization {mode!r} has no bioimage.io equivalent ({why.get(mode, 'no such step')}); "
                     f"export a checkpoint trained with 'percentile' or 'standardize', or the network alone with "
                     f"--format onnx and normalise with normalization.normalize_image")


def shipped_scores(checkpoint: Path, task: str) -> list[str]:
    """For a shipped model (models/TASK.pth): the rows of models/README.md's tables that name its task."""
    shipped = TASKS[task].model_path
    readme = shipped.parent / "README.md"
    if checkpoint.resolve() != shipped.resolve() or not readme.is_file():
        return []
    tables, table = [], []
    for line in readme.read_text(encoding="utf-8").splitlines() + [""]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            tables.append(table)
            table = []
    out = []
    for header, rule, *rows in (t for t in tables if len(t) > 2):
        mine = [r for r in rows if r.strip("|").split("|")[0].strip() == task]
        if mine:
            out += [header, rule, *mine, ""]
    return out


def readme_text(info: dict, *, checkpoint: Path, halo: int, minimum: int, step: int, threshold: str,
                parameters: int, test_source: str) -> str:
    """The package's README.md, written from the checkpoint's metadata."""
    import unet

    task, args, train = info["task"], info["model_args"], info.get("train_args") or {}
    radius = unet.receptive_radius(args)
    px = info.get("pixel_size_um")
    norm = info["normalization"]
    scale = f"{px:g} um per pixel" if px else "the pixel size of its training data (not recorded)"
    lines = [
        f"# SynSeg {task} U-Net", "",
        f"Segments {TASKS[task].description} in 2D fluorescence microscopy images. The network returns one "
        f"channel, the "
        f"probability that a pixel belongs to the structure; threshold it at **{threshold}** (the SynSeg "
        f"default) to get a mask.", "",
        "## Input", "",
        f"- One 2D plane, one channel, any bit depth, at **{scale}**; resize images at other pixel sizes "
        f"to that scale first (structures then have the size the model learned).",
        f"- Normalisation (part of the package, applied by the consumer software): {normalization_words(norm)}.",
        f"- Tiles: at least {minimum} px, in steps of {step} px. Crop {halo} px (the halo: the network's "
        f"receptive radius of {radius} px, rounded up to the {step} px pooling grid) from tile edges inside "
        f"the image, or overlap tiles by twice that.", "",
        "## How it was made", "",
        f"A U-Net (Ronneberger et al. 2015) with base {args.get('base_channels')} channels, depth "
        f"{args.get('depth')}, first convolution of each block {args.get('first_kernel')}x"
        f"{args.get('first_kernel')}, batch norm, {parameters:,} parameters, trained only on synthetic "
        f"images with exact masks from SynSeg's {TASKS[task].generator}; no real image was used for training "
        f"or model selection.",
    ]
    if train:
        lines.append("Training: " + ", ".join(f"{k} {train[k]}" for k in
                     ("epochs", "batch_size", "crop_size", "lr", "weight_decay", "loss", "seed")
                     if train.get(k) is not None) + (
                     "; fine-tuned from an earlier SynSeg model." if train.get("init_weights") else "."))
    metrics = info.get("metrics") or {}
    lines += ["", "## Scores", ""]
    if metrics:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k not in ("epoch", "loss")
                          and isinstance(v, float))
        lines.append(f"Synthetic validation set at the selected epoch {metrics.get('epoch', '?')} "
                     f"(threshold 0.5): {shown}.")
    scores = shipped_scores(checkpoint, task)
    if scores:
        lines += ["", "Held-out synthetic images (from the SynSeg repository's models/README.md):", "", *scores,
                  "Results on real images are discussed in models/README.md of the SynSeg repository."]
    lines += [
        "", "## Validation", "",
        f"The package's test input ({test_source}) and test output let any bioimage.io tool check that it "
        f"runs the model as intended (`bioimageio test`). To validate on your own data, segment a few images "
        f"with a manual mask and compare Dice; SynSeg's evaluate.py scores masks against ground truth.", "",
        "## Limitations", "",
        "The model has seen only synthetic data. This package returns the probability map; SynSeg's own "
        f"script ({TASKS[task].script}) adds tiled prediction at the physical scale, "
        + ("the watershed split of touching objects and per-object measurements."
           if TASKS[task].split else "skeleton length and junction measurements."),
    ]
    return "\n".join(lines) + "\n"


def normalization_words(norm: dict) -> str:
    """A sentence for the README that says what the normalisation does."""
    mode = norm.get("mode", "standardize")
    if mode == "percentile":
        return (f"each image is stretched so that its percentiles {norm.get('low', 1.0):g} and "
                f"{norm.get('high', 99.8):g} become 0 and 1")
    if mode == "standardize":
        return "each image is shifted and scaled to zero mean and unit variance"
    if mode == "local":
        return ("inside the network, not by the consumer: the local background (a grey opening with a disc of "
                f"{norm.get('radius', 7.0):g} px) is subtracted and the rest divided by the image's noise at that "
                "background level (shot + read noise fitted to the whole input), then asinh-compressed; give the "
                "raw image, and whole images or large tiles (the noise is fitted to what the model receives)")
    return "each image is min-max stretched to 0..255"


def build_description(work: Path, info: dict, model, *, checkpoint: Path, test_source: str, authors: list[str],
                      license_id: str, preprocessing_steps: list, halo: int, minimum: int, step: int,
                      in_graph: bool = False):
    """The bioimage.io ModelDescr over the files in `work`; in_graph: the normalisation is inside the weights."""
    import torch
    from bioimageio.spec.model import v0_5 as bio

    from synseg.segment import tiling
    import unet

    task, model_args = info["task"], info["model_args"]
    px = info.get("pixel_size_um")
    # Whole nanometres: bioimageio.spec 0.5.12 requires halo * scale / scale to be an integer in floating
    # point, which fails for some halos at 0.1 (um); integers pass. The exact value is in config.synseg.
    space = {"scale": float(max(1, round(px * 1000))), "unit": "nanometer"} if px else {}
    threshold = TASKS[task].threshold
    parameters = sum(p.numel() for p in model.parameters())
    (work / "README.md").write_text(readme_text(info, checkpoint=checkpoint, halo=halo, minimum=minimum,
                                                step=step, threshold=threshold, parameters=parameters,
                                                test_source=test_source), encoding="utf-8")
    in_id = bio.TensorId("raw")
    size = bio.ParameterizedSize(min=minimum, step=step)
    inputs = [bio.InputTensorDescr(
        id=in_id, description="raw fluorescence image, one plane",
        axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=[bio.Identifier("raw")]),
              bio.SpaceInputAxis(id=bio.AxisId("y"), size=size, **space),
              bio.SpaceInputAxis(id=bio.AxisId("x"), size=size, **space)],
        test_tensor=bio.FileDescr(source=work / "test_input.npy"),
        sample_tensor=bio.FileDescr(source=work / "sample_input.tif"),
        data=bio.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=preprocessing_steps)]
    outputs = [bio.OutputTensorDescr(
        id=bio.TensorId("probability"), description=f"probability of {task} foreground (0..1)",
        axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=[bio.Identifier(task)]),
              *(bio.SpaceOutputAxisWithHalo(id=bio.AxisId(a), halo=halo, **space,
                                            size=bio.SizeReference(tensor_id=in_id, axis_id=bio.AxisId(a)))
                for a in ("y", "x"))],
        test_tensor=bio.FileDescr(source=work / "test_output.npy"),
        sample_tensor=bio.FileDescr(source=work / "sample_output.tif"),
        data=bio.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        postprocessing=[bio.SigmoidDescr()])]
    version = torch.__version__.split("+")[0]
    if in_graph:  # the normalisation is part of the traced graph: TorchScript and ONNX only (no architecture file)
        weights = bio.WeightsDescr(
            torchscript=bio.TorchscriptWeightsDescr(source=work / "weights_torchscript.pt",
                                                    pytorch_version=bio.Version(version)),
            onnx=bio.OnnxWeightsDescr(source=work / "weights.onnx", opset_version=ONNX_OPSET))
    else:
        weights = bio.WeightsDescr(
            pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
                source=work / "weights_state_dict.pt", pytorch_version=bio.Version(version),
                architecture=bio.ArchitectureFromFileDescr(source=Path(unet.__file__).resolve(),
                                                           callable=bio.Identifier("UNet"),
                                                           kwargs=dict(model_args))),
            torchscript=bio.TorchscriptWeightsDescr(source=work / "weights_torchscript.pt",
                                                    parent="pytorch_state_dict", pytorch_version=bio.Version(version)),
            onnx=bio.OnnxWeightsDescr(source=work / "weights.onnx", parent="pytorch_state_dict",
                                      opset_version=ONNX_OPSET))
    train = info.get("train_args") or {}
    training = bio.TrainingDetails(
        training_preprocessing=f"synthetic images from {TASKS[task].generator}"
                               + (f", random crops of {train['crop_size']} px" if train.get("crop_size") else "")
                               + f"; {normalization_words(info['normalization'])}",
        training_epochs=train.get("epochs"), training_batch_size=train.get("batch_size"),
        initial_learning_rate=train.get("lr"), loss_function=train.get("loss"),
        regularization=f"weight decay {train['weight_decay']}" if train.get("weight_decay") else None)
    synseg = {  # the checkpoint's own metadata, for SynSeg and for people reading the yaml
        "task": task, "normalization": dict(info["normalization"]), "pixel_size_um": px,
        "model_args": dict(model_args), "threshold": float(threshold),
        "receptive_radius_px": unet.receptive_radius(model_args), "halo_px": halo,
        "cpu_tile_size_px": tiling.auto_tile_size(model_args, "cpu"),
        "validation_metrics": dict(info.get("metrics") or {})}
    return bio.ModelDescr(
        name=f"SynSeg {task} U-Net",
        description=f"Segments {TASKS[task].description} in 2D fluorescence images; a U-Net trained only on synthetic "
                    f"images with exact masks (SynSeg). Returns a probability map; threshold {threshold}.",
        authors=[bio.Author(name=a) for a in authors],
        cite=[bio.CiteEntry(**UNET_CITATION)],
        license=license_id,
        documentation=bio.FileDescr(source=work / "README.md"),
        covers=[bio.FileDescr(source=work / "cover.png")],
        tags=["unet", "pytorch", "2d", "fluorescence-light-microscopy", "semantic-segmentation",
              "synthetic-training-data", "synseg", *TASKS[task].tags],
        inputs=inputs, outputs=outputs, weights=weights,
        config=bio.Config(
            bioimageio=bio.BioimageioConfig(
                architecture_type="U-Net", modality="fluorescence microscopy", task="semantic segmentation",
                target_structure=list(TASKS[task].tags), model_parameter_count=parameters, training=training),
            synseg=synseg))


# --------------------------------------------------------------------------- the two formats

def write_package(checkpoint: Path, out: Path, args) -> dict:
    """Write the bioimage.io zip for `checkpoint`; returns the exported-vs-PyTorch differences."""
    import cv2
    import tifffile
    import torch
    from bioimageio.spec import save_bioimageio_package

    import unet

    model, info = unet.load_model(checkpoint)
    in_graph = info["normalization"].get("mode") == "local"
    # fails early for a rule the format cannot express; the local contrast goes into the graph instead
    steps = [] if in_graph else preprocessing(info["normalization"])
    exported = model
    halo, minimum, step = size_hints(info["model_args"])
    if in_graph:  # the noise is fitted inside the halo that consumers pad around the image (export_graph)
        from synseg.export_graph import LocalContrastNet

        exported = LocalContrastNet(model, info["normalization"], margin=halo).eval()
        minimum = 2 * halo + max(step, 64)  # room for the fit's windows inside the halo
    size = valid_size(args.test_size, minimum, step)
    if args.test_image:
        image, test_source = image_crop(args.test_image, size), f"the central {size} px of {args.test_image.name}"
    else:
        image = synthetic_image(info["task"], size, info.get("pixel_size_um"), args.seed)
        test_source = f"a synthetic {size} x {size} image from {TASKS[info['task']].generator}, seed {args.seed}"
    raw = np.asarray(image, dtype=np.float32)
    prob = probability(model, raw, info["normalization"])
    trace_shape, check_shape = odd_shapes(minimum, step)
    extra = {}
    if in_graph:  # the test output is the graph's own on the bare tile (bioimageio.core's test pads nothing)
        with torch.inference_mode():
            tile = torch.from_numpy(raw)[None, None]
            # what a consumer computes: the image padded by the halo (mirrored), the output cropped
            padded = torch.nn.functional.pad(tile, (halo,) * 4, mode="reflect")
            consumer = torch.sigmoid(exported(padded))[0, 0, halo:-halo, halo:-halo].numpy()
            prob_graph = torch.sigmoid(exported(tile))[0, 0].numpy()
        inner = (slice(halo, -halo),) * 2  # away from the border, where padding rules differ
        extra["graph on the padded image vs SynSeg (probability, > halo from the edge)"] = float(
            np.abs(consumer - prob)[inner].max())
        prob = prob_graph
    with tempfile.TemporaryDirectory(prefix="synseg_export_") as tmp:
        work = Path(tmp)
        np.save(work / "test_input.npy", raw[None, None])
        np.save(work / "test_output.npy", prob[None, None])
        tifffile.imwrite(work / "sample_input.tif", raw)
        tifffile.imwrite(work / "sample_output.tif", prob)
        cv2.imwrite(str(work / "cover.png"), cover_image(raw, prob))
        torch.save(model.state_dict(), work / "weights_state_dict.pt")
        example = torch.zeros(trace_shape)
        script = trace(exported, example)
        script.save(str(work / "weights_torchscript.pt"))
        export_onnx(exported, example, work / "weights.onnx")
        diffs = check_exports(exported, check_shape, onnx_path=work / "weights.onnx", script=script, seed=args.seed)
        require_close(diffs, check_shape)
        descr = build_description(work, info, model, checkpoint=checkpoint, test_source=test_source,
                                  authors=args.author, license_id=args.license, preprocessing_steps=steps,
                                  halo=halo, minimum=minimum, step=step, in_graph=in_graph)
        with tiffio.atomic_path(out) as tmp_out:  # never a half-written package; a failed write is one line
            save_bioimageio_package(descr, output_path=tmp_out)
    return {**diffs, **extra}


def write_onnx(checkpoint: Path, out: Path, args) -> dict:
    """Write the ONNX file alone; returns its difference from PyTorch."""
    import torch

    import unet

    model, info = unet.load_model(checkpoint)
    _, minimum, step = size_hints(info["model_args"])
    trace_shape, check_shape = odd_shapes(minimum, step)
    with tiffio.atomic_path(out) as tmp:
        export_onnx(model, torch.zeros(trace_shape), tmp)
        diffs = check_exports(model, check_shape, onnx_path=tmp, seed=args.seed)
        require_close(diffs, check_shape)
    return diffs


def validate(path: Path):
    """bioimageio.spec's validation summary of a package (format and files, nothing fetched)."""
    from bioimageio.spec import load_description

    return load_description(path, perform_io_checks=True).validation_summary


def core_test(path: Path):
    """bioimageio.core's test of a package: every weight format reproduces the test output."""
    from bioimageio.core import test_model

    return test_model(path, devices=["cpu"])


# --------------------------------------------------------------------------- command line

def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    p.add_argument("checkpoint", type=Path, help="SynSeg checkpoint (.pth), e.g. models/vesicle.pth")
    p.add_argument("-o", "--output", type=Path, required=True, help="file to write (.zip package or .onnx)")
    p.add_argument("--format", choices=("bioimageio", "onnx"), default="bioimageio",
                   help="bioimage.io package (state dict + TorchScript + ONNX) or the ONNX file alone")
    p.add_argument("--test-size", type=cli.finite_int(low=1), default=256,
                   help="edge of the test tile in px (raised to the next size the model allows)")
    p.add_argument("--test-image", type=Path, default=None,
                   help="2D image whose central crop is the test input (default: a synthetic image)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic test image and the check tile")
    p.add_argument("--author", action="append", default=None,
                   help="author name for the package (repeat for several; default: SynSeg contributors)")
    p.add_argument("--license", default="MIT", help="SPDX license identifier of the weights")
    p.add_argument("--check", action="store_true",
                   help="also run bioimageio.core's test: the model on the test input reproduces the test output")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return p


def main(args: argparse.Namespace) -> int:
    """Export one checkpoint; returns the exit code."""
    args.author = args.author or ["SynSeg contributors"]
    out = args.output
    suffix = ".zip" if args.format == "bioimageio" else ".onnx"
    if out.suffix.lower() != suffix:
        print(f"error: --format {args.format} writes a {suffix} file, got {out}", file=sys.stderr)
        return 2
    if out.exists() and not args.overwrite:
        print(f"error: {out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    if args.test_image and not args.test_image.is_file():
        print(f"error: --test-image {args.test_image}: no such file", file=sys.stderr)
        return 2
    base = next(p for p in [out.parent, *out.absolute().parents] if p.exists())  # made at the end
    try:  # a read-only or otherwise unwritable place is refused before the export's work
        if not base.is_dir():
            raise tiffio.WriteError(out, f"{base} is a file, not a folder")
        tiffio.check_writable(base)
    except OSError as err:
        print(f"error: -o {out}: cannot write there ({err.strerror or err})", file=sys.stderr)
        return 2
    try:
        if args.format == "onnx":
            diffs = write_onnx(args.checkpoint, out, args)
        else:
            diffs = write_package(args.checkpoint, out, args)
    except (FileNotFoundError, ValueError, RuntimeError) as err:  # one line that names the checkpoint
        print(f"error: {err if str(args.checkpoint) in str(err) else f'{args.checkpoint}: {err}'}", file=sys.stderr)
        return 1
    except OSError as err:  # disk full while writing: nothing is left under the output name
        print(f"error: {tiffio.write_error_line(err)}", file=sys.stderr)
        return 1
    print(f"{args.checkpoint} -> {out}; max |exported - PyTorch| on an odd tile: "
          + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    if args.format == "onnx":
        return 0
    summary = validate(out)
    print(f"bioimageio.spec validation: {summary.status}")
    if summary.status not in ("valid-format", "passed"):
        print(summary.format(), file=sys.stderr)
        return 1
    if args.check:
        summary = core_test(out)
        print(f"bioimageio.core test run: {summary.status}")
        if summary.status != "passed":
            print(summary.format(), file=sys.stderr)
            return 1
    return 0


def run() -> None:
    """The console command `synseg-export`: parse the command line, exit with main's code."""
    sys.exit(main(get_args_parser().parse_args()))


if __name__ == "__main__":
    run()
