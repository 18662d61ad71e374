"""The SynSeg dock widget: segment the selected image layer, results as layers, live decision knobs.

Plugins > SynSeg (or napari's widget menu). The network runs in a worker thread (napari.qt.threading) with a
progress bar and a Cancel button; a change of threshold, contrast cut, min SNR, spot core or tracking
re-decides on the kept probability maps (engine.Run.decide) without running the network again. A change
of image, task, model or pixel size needs Segment again. Layers written (named after the image):
"<image> probability" (Image), "<image> mask" (Labels, one label per vesicle as objects.csv numbers them
per plane), "<image> spots" (Points, features = the objects.csv columns), "<image> tracks" (Tracks), all
with the input layer's scale and translate, so they sit on the image in 2D, in T/Z stacks and in um.

The quality check (synseg/segment/qc.py, the command line's qc column) is shown under the knobs: "qc: ok"
with the expected score, or the reasons with what to do; the mask layer's metadata["qc"] holds the qc
columns (qc, expected_score and the figures) as summary.csv would.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui import widgets

from synseg.napari import engine
from synseg.tasks import TASKS

TASK_CHOICES = [("vesicles / spots", "vesicle"), ("filaments", "cytoskeleton")]
NUMERIC = ("area", "centroid_y", "centroid_x", "mean_intensity", "y", "x", "peak", "background", "contrast", "snr",
           "integrated_intensity", "peak_probability")


def layer_pixel_size(layer) -> float:
    """um per pixel of an image layer: its scale on X when set (not napari's 1.0 default), else its metadata
    (pixel_size_um, as the SynSeg sample and TIFF readers record), else 0 (unknown: no rescaling)."""
    scale = float(layer.scale[-1])
    if abs(scale - 1.0) > 1e-9 and scale > 0:
        return scale
    return float(layer.metadata.get("pixel_size_um", 0.0) or 0.0)


def objects_features(objects: list[dict]):
    """The objects.csv rows as a napari features table (numbers as floats; file dropped)."""
    import pandas as pd
    from synseg.segment import postprocess

    columns = [c for c in postprocess.OBJECT_FIELDS if c != "file"]
    table = {c: [o.get(c, "") for o in objects] for c in columns}
    for c in NUMERIC:
        table[c] = [float(v) if v not in ("", None) else np.nan for v in table[c]]
    table["plane"] = [int(v) for v in table["plane"]]
    table["label"] = [int(v) for v in table["label"]]
    return pd.DataFrame(table, columns=columns)


def points_of(objects: list[dict], shape: tuple[int, ...]) -> np.ndarray:
    """Point coordinates (leading axes..., y, x) of objects.csv rows on an image of `shape` (data pixels)."""
    lead = shape[:-2]
    coords = np.zeros((len(objects), len(shape)), np.float64)
    for i, o in enumerate(objects):
        if lead:
            coords[i, :-2] = np.unravel_index(int(o["plane"]), lead)
        coords[i, -2:] = (float(o["y"] if o.get("y") not in ("", None) else o["centroid_y"]),
                          float(o["x"] if o.get("x") not in ("", None) else o["centroid_x"]))
    return coords


def tracks_of(rows: list[dict]) -> np.ndarray:
    """napari Tracks data (track_id, t, y, x) from tracks.csv rows."""
    return np.array([[float(r["track_id"]), float(r["frame"]), float(r["y"]), float(r["x"])] for r in rows],
                    np.float64).reshape(-1, 4)


def qc_text(row: dict) -> str:
    """The quality label's text from a result's qc columns (qc.verdict: the command line's log line)."""
    from synseg.segment import qc

    return qc.verdict(row) if row else ""


class SynSegWidget(widgets.Container):
    """Segment the chosen image layer with a SynSeg model; results as layers, knobs re-decide live."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.run_state: engine.Run | None = None  # the kept network output of the current input
        self._run_key = None
        self.result: engine.Result | None = None
        self.busy = False  # a worker is running
        self._pending = False  # a knob changed while a decision was running: decide again after it
        self._worker = None
        self.error: str | None = None

        self.image = widgets.ComboBox(label="image", choices=self._image_choices)
        self.task = widgets.ComboBox(label="task", choices=TASK_CHOICES, value="vesicle")
        self.model = widgets.FileEdit(label="model", mode="r", filter="*.pth", value=TASKS["vesicle"].model_path)
        self.pixel_size = widgets.FloatSpinBox(label="pixel size (um)", min=0.0, max=100.0, step=0.001, value=0.0,
                                               tooltip="um per pixel of the image; 0: unknown (no rescaling to "
                                                       "the model's pixel size). Read from the layer's scale.")
        self.threshold = widgets.FloatSlider(label="threshold", min=0.01, max=0.99, step=0.01, value=0.5,
                                             tooltip="probability threshold of the mask (--threshold)")
        self.contrast_cut = widgets.CheckBox(text="contrast cut", value=True,
                                             tooltip="drop the image's dim group of spots when the spot contrasts "
                                                     "form two separated groups (--no-contrast-cut unticks it)")
        self.min_snr = widgets.FloatSpinBox(label="min SNR", min=0.0, max=1000.0, step=0.5, value=0.0,
                                            tooltip="also drop spots whose local SNR is below this (--min-snr)")
        self.spot_core = widgets.FloatSlider(label="spot core", min=0.0, max=0.95, step=0.05, value=0.5,
                                             tooltip="trim each spot to its pixels above background + this "
                                                     "share of its contrast (--spot-core; 0: the network's mask)")
        self.track = widgets.CheckBox(text="track (time-lapse T, Y, X)", value=False,
                                      tooltip="link the spots of consecutive frames into tracks (--track)")
        self.search_range = widgets.FloatSpinBox(label="search range (px)", min=0.0, max=1000.0, step=0.5, value=0.0,
                                                 tooltip="largest step between frames; 0: from pixel size and "
                                                         "frame interval, else 5 px (--search-range)")
        self.track_memory = widgets.SpinBox(label="track memory", min=0, max=20, value=1,
                                            tooltip="frames a spot may be missed and keep its track")
        self.segment_button = widgets.PushButton(text="Segment")
        self.cancel_button = widgets.PushButton(text="Cancel", enabled=False)
        self.progress = widgets.ProgressBar(label="progress", min=0, max=1, value=0)
        self.status = widgets.Label(label="status", value="choose an image and press Segment")
        self.status.native.setWordWrap(True)  # a long decision line wraps instead of widening the dock
        self.quality = widgets.Label(label="quality", value="",
                                     tooltip="the per-image quality check (the qc column of summary.csv): ok, or "
                                             "why the mask may not be trusted and what to do; the expected score "
                                             "is spot F1 (vesicles) or skeleton F1 (filaments), n/a without a "
                                             "calibration for this model")
        self.quality.native.setWordWrap(True)
        self.native.setMaximumWidth(480)
        self.extend([self.image, self.task, self.model, self.pixel_size, self.segment_button, self.cancel_button,
                     self.progress, self.threshold, self.contrast_cut, self.min_snr, self.spot_core, self.track,
                     self.search_range, self.track_memory, self.status, self.quality])

        self.image.changed.connect(self._image_changed)
        self.task.changed.connect(self._task_changed)
        self.segment_button.changed.connect(self.segment)
        self.cancel_button.changed.connect(self.cancel)
        for knob in (self.threshold, self.contrast_cut, self.min_snr, self.spot_core, self.track,
                     self.search_range, self.track_memory):
            knob.changed.connect(self._knob_changed)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed,
                      self.viewer.layers.events.reordered):
            event.connect(self._layers_changed)
        self._task_changed()
        self._layers_changed()
        self._image_changed()

    # ------------------------------------------------------------------ controls

    def _image_choices(self, _widget=None):
        """Image layers that are not our own outputs, newest first (the selected one is picked when set)."""
        import napari

        return [(layer.name, layer) for layer in reversed(self.viewer.layers)
                if isinstance(layer, napari.layers.Image) and not layer.name.endswith(" probability")]

    def _layers_changed(self, _event=None) -> None:
        """Refresh the image choices; prefer the selected image layer."""
        self.image.reset_choices()
        active = self.viewer.layers.selection.active
        if active is not None and active in [c[1] for c in self._image_choices()]:
            self.image.value = active
        elif self.image.value is not None:
            self._image_changed()

    def _image_changed(self, _value=None) -> None:
        layer = self.image.value
        if layer is not None:
            self.pixel_size.value = round(layer_pixel_size(layer), 6)

    def _task_changed(self, _value=None) -> None:
        """Default model of the task; vesicle knobs shown for the vesicle task only."""
        record = TASKS[self.task.value]
        self.model.value = record.model_path
        defaults = engine.Decision.defaults(record.name)
        self.threshold.value = defaults.threshold
        for knob in (self.contrast_cut, self.min_snr, self.spot_core):
            knob.visible = record.contrast_cut or bool(record.spot_core)
        for knob in (self.track, self.search_range, self.track_memory):
            knob.visible = record.track

    def decision(self) -> engine.Decision:
        """The knobs as an engine.Decision."""
        layer = self.image.value
        interval = 0.0
        if layer is not None and layer.ndim == 3:
            interval = float(layer.metadata.get("frame_interval_s", 0.0) or 0.0)
        return engine.Decision(threshold=round(float(self.threshold.value), 4), contrast_cut=self.contrast_cut.value,
                               min_snr=float(self.min_snr.value), spot_core=round(float(self.spot_core.value), 4),
                               track=self.track.value, search_range=float(self.search_range.value),
                               track_memory=int(self.track_memory.value), frame_interval=interval)

    # ------------------------------------------------------------------ work

    def _key(self):
        layer = self.image.value
        return (id(layer), self.task.value, str(self.model.value), float(self.pixel_size.value))

    def segment(self, _value=None) -> None:
        """Run the network on the chosen image in a worker thread, then decide and show the layers."""
        from napari.qt.threading import create_worker

        layer = self.image.value
        if layer is None:
            self._fail("no image layer: open an image first (File > Open, or File > Open Sample > SynSeg)")
            return
        if getattr(layer, "rgb", False):
            self._fail(f"{layer.name} is an RGB image; SynSeg needs one channel (split the channels first)")
            return
        if self.busy:
            return
        data = layer.data[0] if layer.multiscale else layer.data
        self.error = None
        self.busy = True
        self.segment_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = 0
        self.status.value = "loading the model"
        key = self._key()

        def work():
            run = engine.Run(np.asarray(data), self.task.value, Path(self.model.value),
                             pixel_size_um=float(self.pixel_size.value) or None)
            for done, total in run.predict():
                yield done, total
            return run

        worker = create_worker(work, _ignore_errors=True)  # errors: _on_error, a status line
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda run: self._on_network(run, key))
        worker.errored.connect(self._on_error)
        worker.aborted.connect(self._on_aborted)
        self._worker = worker
        worker.start()

    def cancel(self, _value=None) -> None:
        """Stop the network after the plane it is on."""
        if self._worker is not None and self.busy:
            self._worker.quit()
            self.status.value = "cancelling"

    def _on_progress(self, value) -> None:
        done, total = value
        self.progress.max = max(1, total)
        self.progress.value = done
        self.status.value = f"network: {done} of {total} plane(s)"

    def _on_network(self, run: engine.Run, key) -> None:
        self.run_state, self._run_key = run, key
        self.cancel_button.enabled = False
        self.status.value = f"network done ({run.segmenter.path}; {run.scale_note}); deciding"
        self._decide()

    def _on_error(self, err) -> None:
        self._finish()
        self._fail(str(err).splitlines()[0] if str(err) else type(err).__name__)

    def _on_aborted(self) -> None:
        self._finish()
        self.status.value = "cancelled; the earlier result (if any) is still shown"

    def _finish(self) -> None:
        self.busy = False
        self._worker = None
        self.segment_button.enabled = True
        self.cancel_button.enabled = False

    def _fail(self, message: str) -> None:
        self.error = message
        self.status.value = f"error: {message}"
        try:
            from napari.utils.notifications import show_error

            show_error(f"SynSeg: {message}")
        except Exception:  # noqa: BLE001 - a notification must never break the widget
            pass

    def _knob_changed(self, _value=None) -> None:
        """A decision knob moved: re-decide on the kept maps (no network), or queue it behind the running one."""
        if self.run_state is None or self._run_key != self._key():
            return
        if self.busy:
            self._pending = True
            return
        self._decide()

    def _decide(self) -> None:
        """The decision step in a worker thread, on the kept probability maps."""
        from napari.qt.threading import create_worker

        run, decision = self.run_state, self.decision()
        layer = self.image.value
        self.busy = True
        self._pending = False
        self.segment_button.enabled = False
        worker = create_worker(run.decide, decision, source=layer.name if layer is not None else "",
                               _ignore_errors=True)
        worker.returned.connect(lambda result: self._on_decided(result, layer))
        worker.errored.connect(self._on_error)
        self._worker = worker
        worker.start()

    def _on_decided(self, result: engine.Result, layer) -> None:
        self._finish()
        self.result = result
        self.show(result, layer)
        n = len(result.objects)
        what = f"{n} object(s)" if self.run_state.task.object_table else f"{int(result.mask.sum())} mask pixels"
        extra = f", {len({r['track_id'] for r in result.tracks})} track(s)" if result.tracks else ""
        self.status.value = f"{what}{extra} at threshold {result.threshold:g}" + (
            f"; {result.notes[0]}" if len(result.notes) == 1 else "")
        self.quality.value = qc_text(result.qc)
        if self._pending:
            self._decide()

    # ------------------------------------------------------------------ layers

    def _put(self, name: str, kind: str, data, layer, **kwargs):
        """Update the layer called `name` in place (keeps the user's display settings), or add it."""
        place = {"scale": layer.scale, "translate": layer.translate}
        if name in self.viewer.layers and self.viewer.layers[name]._type_string == kind:
            out = self.viewer.layers[name]
            if kind == "points":
                out.data = data
                out.features = kwargs["features"]
                out.size = kwargs["size"]
            else:
                out.data = data
            return out
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        adder = getattr(self.viewer, f"add_{kind}")
        return adder(data, name=name, **place, **kwargs)

    def show(self, result: engine.Result, layer) -> None:
        """The result as layers on top of `layer` (same scale and translate)."""
        base = layer.name
        self._put(f"{base} probability", "image", result.probability, layer, colormap="magma", blending="additive",
                  contrast_limits=(0.0, 1.0), opacity=0.5, visible=False)
        if self.run_state.task.object_table:
            self._put(f"{base} mask", "labels", result.labels, layer, opacity=0.5)
            coords = points_of(result.objects, result.mask.shape)
            features = objects_features(result.objects)
            # a ring just wider than the spot; area_px, not area (um^2 when the pixel size is known)
            size = 2.0 * np.sqrt(np.array([float(o["area_px"]) for o in result.objects]) / np.pi) + 2.0
            self._put(f"{base} spots", "points", coords, layer, features=features, size=size,
                      face_color="transparent", border_color="yellow", border_width=0.1, symbol="disc")
        else:
            self._put(f"{base} mask", "labels", result.mask.astype(np.int32), layer, opacity=0.5)
        self.viewer.layers[f"{base} mask"].metadata["qc"] = dict(result.qc)
        name = f"{base} tracks"
        if result.tracks:
            self._put(name, "tracks", tracks_of(result.tracks), layer, tail_length=10)
        elif name in self.viewer.layers:
            self.viewer.layers.remove(name)
