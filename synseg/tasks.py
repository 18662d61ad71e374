"""The segmentation tasks: one record each, holding everything that differs between them.

    task = TASKS["vesicle"]
    task.model, task.normalization, task.measure, task.augmentation, ...

The scripts name their task once (SynSeg_Vesicle.py: TASK = "vesicle") and every shared module reads the
fields of its record, never the task's name: the generator, training, segmentation, export and demo steps
of a task are all described here. A third task is one more record plus its structure module (like
vesicles.py) and its thin scripts.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from synseg.train import augment
from synseg.segment import postprocess

# The repository (a clone, or an editable install): shipped models live in its models/ folder. A plain
# `pip install .` copies that folder into the package as synseg/models (pyproject.toml).
REPOSITORY = Path(__file__).resolve().parents[1]
INSTALLED_MODELS = Path(__file__).resolve().parent / "models"

# The normalisation of both training presets: local contrast (normalization.local_contrast), asinh-compressed.
LOCAL_CONTRAST = {"mode": "local", "radius": 7.0, "sigma": 4.0, "compress": "asinh"}


@dataclass(frozen=True)
class Task:
    """One segmentation task; the engine, the training loop, export_model.py and demo.py read these fields."""

    name: str  # as recorded in checkpoints ("task") and tables
    # scripts and the shipped model
    generator: str  # generator script
    train_script: str  # what writes a model for this task, named when the model is missing
    script: str  # segmentation script, named in messages
    model: str  # shipped checkpoint, relative to the repository; the segmentation script's default
    # network, input and training
    first_kernel: int  # first convolution of every U-Net block is first_kernel x first_kernel
    normalization: dict  # normalization.normalize_image spec used in training, stored in the checkpoint
    original_normalization: dict  # how the original SynSeg script fed its network (bare original weights)
    augmentation: object  # augment.py preset: intensity(image, rng), spatial(image, mask, rng)
    # segmentation
    measure: type  # postprocess.ObjectMeasure or postprocess.SkeletonMeasure
    overlay_style: str  # predict.write_overlay: "outline" keeps small spots visible, "fill" suits dense filaments
    split: bool  # split touching objects with the seeded watershed (--no-split, --min-distance)
    # export (bioimage.io) and the demo report
    description: str  # what the model segments, one line
    tags: tuple[str, ...]  # bioimage.io tags
    report_metrics: tuple[tuple[str, str], ...]  # (evaluate.py metrics.json key, heading) in demo.py's report
    points: bool  # the generator writes per-object tables, so evaluate.py scores spots (--gt-points)
    brightness_check: bool  # demo.py segments copies at x0.01 and x100 brightness too
    loss: str = "bce+dice"  # training's default --loss
    threshold: str = "0.5"  # default --threshold
    contrast_cut: bool = False  # spots.filter_spots: drop the image's dim group of objects (--no-contrast-cut)
    spot_core: float = 0.0  # spots.filter_spots: default --spot-core (0: the task has no such flag)
    track: bool = False  # --track: link the objects of a time-lapse's frames into tracks (tracking.py)

    @property
    def summary_fields(self) -> tuple[str, ...]:
        """Columns of summary.csv."""
        return postprocess.SUMMARY_COLUMNS + self.measure.columns + postprocess.QC_FIGURES

    @property
    def object_table(self) -> bool:
        """Whether --object-csv (one row per object) is offered."""
        return self.measure is postprocess.ObjectMeasure

    @property
    def generator_module(self) -> str:
        """The library module behind the generator script (its get_args_parser and render_one)."""
        return "synseg.generate." + self.generator.removesuffix(".py").lower()

    @property
    def model_path(self) -> Path:
        """The shipped checkpoint: the repository's models/ folder, else the installed package's copy."""
        here = REPOSITORY / self.model
        if here.is_file() or not (INSTALLED_MODELS / Path(self.model).name).is_file():
            return here
        return INSTALLED_MODELS / Path(self.model).name


TASKS = {t.name: t for t in (
    Task(name="vesicle", generator="Vesicle_generator.py", train_script="train_vesicle_seg.py",
         script="SynSeg_Vesicle.py", model="models/vesicle.pth",
         first_kernel=3, normalization=dict(LOCAL_CONTRAST), original_normalization={"mode": "median", "target": 500.0},
         augmentation=augment.BlobAugmentation(),
         measure=postprocess.ObjectMeasure, overlay_style="outline", split=True, contrast_cut=True, spot_core=0.5,
         track=True,
         description="vesicles, puncta and diffraction-limited spots (e.g. smFISH)",
         tags=("vesicles", "puncta", "spots", "smfish"),
         report_metrics=(("dice", "Dice"), ("iou", "IoU"), ("precision", "precision"), ("recall", "recall"),
                         ("spot_f1", "spot F1"), ("obj_f1", "object F1"), ("auc", "AUC")),
         points=True, brightness_check=True),
    Task(name="cytoskeleton", generator="Cytoskeleton_generator.py", train_script="train_cytoskeleton_seg.py",
         script="SynSeg_Cytoskeleton.py", model="models/cytoskeleton.pth",
         first_kernel=5, normalization=dict(LOCAL_CONTRAST), original_normalization={"mode": "minmax255"},
         augmentation=augment.FilamentAugmentation(),
         measure=postprocess.SkeletonMeasure, overlay_style="fill", split=False,
         description="thin filaments (microtubules, actin, ER tubules) and mitochondria",
         tags=("cytoskeleton", "filaments", "microtubules", "actin", "mitochondria"),
         report_metrics=(("dice", "Dice"), ("iou", "IoU"), ("cldice", "clDice"),
                         ("skel_precision", "skeleton precision"), ("skel_recall", "skeleton recall"), ("auc", "AUC")),
         points=False, brightness_check=False),
)}


def for_original_weights(first_kernel: int) -> Task:
    """The task of bare original SynSeg weights, told by their first kernel (5x5: cytoskeleton, 3x3: vesicle);
    any other size: the first task."""
    return next((t for t in TASKS.values() if t.first_kernel == first_kernel), next(iter(TASKS.values())))
