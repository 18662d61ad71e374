"""The plugin's engine, without Qt: the command line's steps on an array, with each stage's result kept.

    run = Run(image, task="vesicle", model=path, pixel_size_um=0.1)   # loads the model (Segmenter)
    for done, total in run.predict():        # the network, plane by plane (the widget's progress bar)
        ...
    result = run.decide(Decision(threshold=0.5, min_snr=3.0))   # threshold, split, decision step, measures
    result = run.decide(Decision(threshold=0.5, min_snr=5.0))   # no network: the probability maps are kept

The steps are those of predict.Segmenter.segment (SynSeg_Vesicle.py / SynSeg_Cytoskeleton.py): the same
Segmenter reads the checkpoint, rescales to the model's pixel size and runs the network
(Segmenter.probabilities); the same postprocess.resolve_threshold, postprocess.split_touching,
spots.filter_spots and the task's measure (postprocess.ObjectMeasure: the objects.csv rows) follow, with
the command line's defaults for each task (tasks.py). So a mask and an object table made here equal those
of the command line on the same image and settings (tests/test_napari.py checks it).

What is kept between calls: the probability maps (until the image, model or pixel size change), and the
split mask of each threshold (the watershed split depends on the threshold only), so a change of a
decision knob (contrast cut, --min-snr, --spot-core) re-runs the decision step and the measures alone.
Tracks come from batch.track_objects, the code behind --track.

The quality check (synseg/segment/qc.py) runs on every decision with the command line's code: the same
planes (qc.planes_to_measure), qc.plane_figures on the split mask before and the mask after the decision
step, qc.summary with the segmenter's calibration (the expected score only for the weights it was made for).
The image's own figures need no model and are kept per plane. Result.qc holds summary.csv's qc columns.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from synseg import tasks


@dataclass(frozen=True)
class Decision:
    """Everything after the network: a change here never runs the network again."""

    threshold: float = 0.5
    contrast_cut: bool = True  # vesicles: the per-image contrast cut (--no-contrast-cut turns it off)
    min_snr: float = 0.0  # vesicles: --min-snr
    spot_core: float = 0.5  # vesicles: --spot-core
    split: bool = True  # vesicles: the watershed split (--no-split turns it off)
    track: bool = False  # time-lapses (T, Y, X): link the vesicles of consecutive frames (--track)
    search_range: float = 0.0  # px per frame; 0: tracking.default_search_range
    track_memory: int = 1  # --track-memory
    frame_interval: float = 0.0  # s; 0: unknown

    @classmethod
    def defaults(cls, task: str) -> Decision:
        """The command line's defaults for `task` (tasks.py)."""
        record = tasks.TASKS[task]
        return cls(threshold=float(record.threshold) if record.threshold != "otsu" else 0.5,
                   contrast_cut=record.contrast_cut, spot_core=record.spot_core, split=record.split)

    def for_task(self, task: str) -> Decision:
        """Knobs the task does not have set to what its command line does without them."""
        record = tasks.TASKS[task]
        return replace(self, contrast_cut=self.contrast_cut and record.contrast_cut,
                       min_snr=self.min_snr if record.contrast_cut else 0.0,
                       spot_core=self.spot_core if record.spot_core else 0.0,
                       split=self.split and record.split, track=self.track and record.track)


@dataclass
class Result:
    """What the widget shows: one entry per plane of the input (planes: every leading axis flattened)."""

    probability: np.ndarray  # float32, the input's shape
    mask: np.ndarray  # uint8 0/1, the input's shape
    labels: np.ndarray  # int32, the input's shape: objects 1..n of each plane, numbered as objects.csv's label
    objects: list[dict]  # objects.csv rows (postprocess.OBJECT_FIELDS; plane = flat plane index)
    tracks: list[dict]  # tracks.csv rows (batch.TRACK_FIELDS) when tracking was asked for, else []
    notes: list[str]  # one line per plane: the decision step's log line (spots.describe_cut)
    threshold: float
    qc: dict = field(default_factory=dict)  # summary.csv's qc columns (qc, expected_score, figures: qc.summary)


_SEGMENTERS: dict = {}  # (model path, mtime, task, backend) -> (model, info); loading is the slow part


def load_model(model: Path, task: str) -> tuple[object, dict]:
    """(network, checkpoint info) of `model` on the CPU, checked as the command line checks it; cached."""
    import torch

    import unet

    model = Path(model)
    if not model.is_file():
        raise FileNotFoundError(f"model {model} not found")
    key = (str(model.resolve()), model.stat().st_mtime_ns)
    if key not in _SEGMENTERS:
        net, info = unet.load_model(model, torch.device("cpu"))
        broken = [k for k, v in net.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if broken:
            raise ValueError(f"{model}: {len(broken)} weight tensor(s) hold NaN or inf (first: {broken[0]})")
        _SEGMENTERS.clear()  # one model at a time in memory
        _SEGMENTERS[key] = (net, info)
    net, info = _SEGMENTERS[key]
    recorded = info.get("task")
    if recorded in tasks.TASKS and recorded != task:
        raise ValueError(f"{model} is a {recorded} model (its checkpoint records task {recorded!r}), "
                         f"not a {task} model; choose the task {recorded}")
    return net, info


def as_planes(image: np.ndarray) -> np.ndarray:
    """(N, Y, X) view of a 2D image or a stack (every leading axis is a plane index), checked like a file."""
    from synseg.segment import predict

    data = np.asarray(image)
    if data.ndim < 2:
        raise ValueError(f"the image has {data.ndim} axis; SynSeg needs 2D planes (Y, X)")
    data = predict.check_values(data, "the image")
    return data.reshape((-1,) + data.shape[-2:])


class Run:
    """One image with one model and pixel size: the network's maps, and every decision made on them."""

    def __init__(self, image: np.ndarray, task: str, model: Path, pixel_size_um: float | None = None,
                 backend: str = "auto"):
        from synseg.segment import predict

        import torch

        self.task = tasks.TASKS[task]
        self.shape = tuple(np.shape(image))
        self.planes = as_planes(image)
        self.pixel_size_um = pixel_size_um or None
        net, info = load_model(model, task)
        options = predict.Options(pixel_size=self.pixel_size_um, split=self.task.split, backend=backend)
        self.segmenter = predict.Segmenter(net, info, self.task, options, torch.device("cpu"))
        self.factor, self.scale_note = self.segmenter.scale_for(self.planes.shape[1:], self.pixel_size_um)
        self.probs: list[np.ndarray | None] | None = None
        self._split: dict = {}  # (threshold, split) -> list of split masks per plane
        self._qc_image: dict = {}  # plane index -> qc.image_figures (they need neither the network nor a knob)
        self._qc_models: dict = {}  # plane index -> its noise model (Segmenter.qc_models)

    def predict(self):
        """The network on every plane; yields (planes done, planes in all) after each, so it can be stopped."""
        live = [k for k, plane in enumerate(self.planes) if plane.min() != plane.max()]
        probs: list[np.ndarray | None] = [None] * len(self.planes)
        yield 0, len(self.planes)
        self._qc_models = self.segmenter.qc_models(self.planes, live, self.factor)  # fitted once: network and qc
        maps = self.segmenter.probabilities(self.planes, live, self.factor, progress=False, stats=self._qc_models)
        for n, k in enumerate(live, start=1):
            prob = next(maps)
            if not np.isfinite(prob.max()):
                raise ValueError(f"the model's output holds NaN (plane {k}); try another model")
            probs[k] = prob
            yield n + len(self.planes) - len(live), len(self.planes)
        self.probs = probs
        self._split.clear()

    def run_network(self) -> None:
        """predict() to the end."""
        for _ in self.predict():
            pass

    def split_masks(self, threshold: float, split: bool) -> list[np.ndarray | None]:
        """Thresholded (and split) masks per plane, kept per threshold: the step before the decision."""
        from synseg.segment import postprocess

        key = (float(threshold), bool(split))
        if key not in self._split:
            out = []
            for plane, prob in zip(self.planes, self.probs):
                if prob is None:
                    out.append(None)
                    continue
                mask = prob > postprocess.resolve_threshold(prob, str(threshold))
                if split:
                    mask = postprocess.split_touching(mask, plane, None, in_place=True)
                out.append(mask)
            if len(self._split) > 8:
                self._split.pop(next(iter(self._split)))
            self._split[key] = out
        return self._split[key]

    def decide(self, decision: Decision, source: str = "") -> Result:
        """Threshold, split, decision step, measures (and tracks): predict.Segmenter.segment after the network."""
        from synseg.segment import postprocess, qc, spots

        if self.probs is None:
            raise RuntimeError("run the network first (predict)")
        d = decision.for_task(self.task.name)
        split = self.split_masks(d.threshold, d.split)
        shape = self.planes.shape
        masks = np.zeros(shape, np.uint8)
        labels = np.zeros(shape, np.int32)
        measure = self.task.measure(Path(source))
        notes = []
        checked, figures = set(qc.planes_to_measure(len(self.planes))), []
        for k, (plane, prob, base) in enumerate(zip(self.planes, self.probs, split)):
            if base is None:
                if k in checked:
                    figures.append(qc.constant_plane())
                continue
            mask = base.copy()
            if d.contrast_cut or d.min_snr > 0 or d.spot_core > 0:
                mask, cut = spots.filter_spots(mask, plane, in_place=True, cut=d.contrast_cut, min_snr=d.min_snr,
                                               core=d.spot_core)
                notes.append(f"{'plane ' + str(k) + ': ' if len(shape) and shape[0] > 1 else ''}"
                             f"{spots.describe_cut(cut)}")
            if k in checked:
                if k not in self._qc_image:
                    self._qc_image[k] = qc.image_figures(plane, self.factor, self.segmenter.norm,
                                                         self._qc_models.get(k))
                figures.append(qc.plane_figures(plane, prob, base, mask, self.factor, self.segmenter.norm,
                                                self.task.name, image=self._qc_image[k]))
            masks[k] = mask
            measure.add(k, mask, plane, prob if measure.uses_prob else None)
            if self.task.object_table:
                labels[k] = postprocess.label8(mask)[0]
        row = {"shape": "x".join(map(str, self.shape)), "scale": f"{self.factor:.4g}",
               "foreground_fraction": f"{float(np.count_nonzero(masks)) / max(masks.size, 1):.6f}",
               **measure.summary(self.pixel_size_um)}
        quality = qc.summary(figures, self.task.name, self.segmenter.calibration, row)
        objects = measure.objects
        tracks = self._tracks(objects, d) if d.track else []
        prob_stack = np.zeros(shape, np.float32)
        for k, prob in enumerate(self.probs):
            if prob is not None:
                prob_stack[k] = prob
        return Result(probability=prob_stack.reshape(self.shape), mask=masks.reshape(self.shape),
                      labels=labels.reshape(self.shape), objects=objects, tracks=tracks, notes=notes,
                      threshold=d.threshold, qc=quality)

    def _tracks(self, objects: list[dict], d: Decision) -> list[dict]:
        """tracks.csv rows of a T, Y, X stack (batch.track_objects, the code behind --track)."""
        from synseg.segment import batch

        if len(self.shape) != 3:
            return []
        row = {"file": "", "axes": "TYX",
               "pixel_size_um": f"{self.pixel_size_um:.6g}" if self.pixel_size_um else "",
               "frame_interval_s": d.frame_interval or None}
        settings = batch.Tracking(search_range=d.search_range or None, memory=d.track_memory,
                                  frame_interval=d.frame_interval or None)
        linked, _ = batch.track_objects(row, objects, settings)
        return linked
