"""The napari plugin (synseg/napari) as a user drives it: a real viewer, the dock widget's controls clicked,
the layers checked; its engine against SynSeg_Vesicle.py on the same image; reader, sample data, manifest.

napari's canvas needs OpenGL, which Qt's offscreen platform gets from an X display: without DISPLAY this
module starts Xvfb (installed by `make` as root: Debian's xvfb) and sets QT_QPA_PLATFORM=offscreen.
The widget tests are skipped only where napari itself is not installed.
"""
import ast
import importlib.util
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import ROOT

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("NAPARI_ASYNC", "0")
HAVE_NAPARI = importlib.util.find_spec("napari") is not None


@pytest.fixture(scope="module", autouse=True)
def _virtual_display():
    """Xvfb for this module's tests, started when they start (not at collection, so the rest of the suite never
    sees its DISPLAY); the watcher stops it when pytest ends (Qt keeps its connection until then)."""
    from synseg.napari._display import start_xvfb

    proc = start_xvfb() if HAVE_NAPARI else None
    yield
    if proc is not None:
        os.environ.pop("DISPLAY", None)


needs_napari = pytest.mark.skipif(not HAVE_NAPARI, reason="napari is not installed (pip install -r "
                                                          "requirements-napari.txt)")


@pytest.fixture(scope="module")
def spots_image():
    """A small synthetic vesicle image from the generator (uint16, 0.1 um/px)."""
    from synseg.napari import _sample

    image, px, _ = _sample.synthetic("vesicle", size=96, seed=3)
    return image, px


def _objects_equal(mine: list[dict], theirs: list[dict]) -> None:
    """objects.csv rows (as the CLI wrote them) equal the engine's rows, number by number."""
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs):
        for key in ("plane", "label", "centroid_y", "centroid_x", "area", "y", "x", "contrast", "snr",
                    "integrated_intensity", "peak_probability"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5, abs=1e-5), key


# --------------------------------------------------------------------------- engine (no Qt)

@pytest.mark.parametrize("flags", [(), ("--min-snr", "2", "--spot-core", "0.3"), ("--no-contrast-cut",)])
def test_engine_equals_command_line(tmp_path, models, spots_image, flags):
    """Mask and object table of the plugin's engine equal SynSeg_Vesicle.py's on the same image and settings."""
    from synseg import tiffio
    from synseg.napari import engine
    from synseg.segment import qc, segment_vesicle

    image, px = spots_image
    src, out = tmp_path / "img.tif", tmp_path / "out"
    tiffio.write_tiff(src, image, pixel_size_um=px)
    args = segment_vesicle.get_args_parser().parse_args(
        ["-i", str(src), "-o", str(out), "-m", str(models["vesicle"]), "--object-csv", *flags])
    assert segment_vesicle.main(args) == 0
    cli_mask = tiffio.read_image(out / "img_mask.tif")[0]
    cli_rows = tiffio.read_csv(out / "objects.csv")
    assert cli_rows, "the fixture must give objects"

    opts = dict(zip(flags[::2], flags[1::2]))
    decision = engine.Decision(contrast_cut="--no-contrast-cut" not in flags,
                               min_snr=float(opts.get("--min-snr", 0)), spot_core=float(opts.get("--spot-core", 0.5)))
    run = engine.Run(image, "vesicle", models["vesicle"], pixel_size_um=px)
    run.run_network()
    result = run.decide(decision)
    np.testing.assert_array_equal(result.mask * 255, cli_mask)
    _objects_equal(result.objects, cli_rows)
    assert result.labels.max() == len(result.objects)
    summary, = tiffio.read_csv(out / "summary.csv")  # the quality check: the same columns, figure by figure
    for key in qc.COLUMNS:
        assert str(result.qc[key]) == str(summary[key]), key


def test_engine_decides_without_the_network(models, spots_image, monkeypatch):
    """A decision knob changes the objects; the network is not run again."""
    from synseg.napari import engine

    image, px = spots_image
    run = engine.Run(image, "vesicle", models["vesicle"], pixel_size_um=px)
    run.run_network()
    first = run.decide(engine.Decision(contrast_cut=False, spot_core=0.0))

    def no_network(*args, **kwargs):
        raise AssertionError("the network ran again")

    monkeypatch.setattr(run.segmenter, "probabilities", no_network)
    strict = run.decide(engine.Decision(contrast_cut=False, spot_core=0.0, min_snr=1e6))
    assert len(first.objects) > 0 and len(strict.objects) == 0 and strict.mask.sum() == 0
    higher = run.decide(engine.Decision(threshold=0.9, contrast_cut=False, spot_core=0.0))
    assert higher.mask.sum() < first.mask.sum()


def test_engine_refuses_other_task_model(models, spots_image):
    from synseg.napari import engine

    with pytest.raises(ValueError, match="cytoskeleton model"):
        engine.Run(spots_image[0], "vesicle", models["cytoskeleton"])


def test_no_qt_outside_the_plugin():
    """The command-line install needs no Qt: nothing in synseg outside synseg/napari imports napari, Qt or
    magicgui, and the plugin's engine imports none of them."""
    gui = {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "vispy"}
    for path in (ROOT / "synseg").rglob("*.py"):
        if "napari" in path.relative_to(ROOT / "synseg").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            assert not {n.split(".")[0] for n in names} & gui, f"{path} imports {names}"
    code = ("import sys, synseg.napari.engine, synseg.napari._reader, synseg.napari._sample; "
            f"print(sorted(m for m in {sorted(gui)!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_reader_tables(tmp_path):
    """objects.csv -> Points at (plane, y, x) with the columns as features; tracks.csv -> Tracks; others: None."""
    from synseg import tiffio
    from synseg.napari import _reader
    from synseg.segment import batch, postprocess

    rows = [{"file": "a.tif", "plane": p, "label": i + 1, "centroid_y": 5.0, "centroid_x": 6.0, "area": 2.5,
             "area_unit": "um^2", "mean_intensity": 10, "y": 5.25 + p, "x": 6.5, "peak": 30, "background": 3,
             "contrast": 27, "snr": 9.5, "integrated_intensity": 100, "peak_probability": 0.9}
            for p in range(2) for i in range(3)]
    tiffio.write_csv(tmp_path / "objects.csv", rows, fields=postprocess.OBJECT_FIELDS)
    reader = _reader.get_reader(str(tmp_path / "objects.csv"))
    assert reader is _reader.read_objects
    (data, meta, kind), = reader(str(tmp_path / "objects.csv"))
    assert kind == "points" and data.shape == (6, 3)
    np.testing.assert_allclose(data[3], [1, 6.25, 6.5])  # the second plane's first row
    assert meta["features"]["snr"].dtype.kind == "f" and meta["features"]["area_unit"][0] == "um^2"
    tracks = [{"file": "m.tif", "track_id": t, "frame": f, "y": f, "x": t, "area": 3, "intensity": 1}
              for t in (1, 2) for f in range(3)]
    tiffio.write_csv(tmp_path / "tracks.csv", tracks, fields=batch.TRACK_FIELDS)
    (data, meta, kind), = _reader.get_reader(str(tmp_path / "tracks.csv"))(str(tmp_path / "tracks.csv"))
    assert kind == "tracks" and data.shape == (6, 4) and set(data[:, 0]) == {1, 2}
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    assert _reader.get_reader(str(tmp_path / "other.csv")) is None
    assert _reader.get_reader(str(tmp_path / "img.tif")) is None


# --------------------------------------------------------------------------- the widget in a real viewer

def _wait(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)
    assert widget.error is None, widget.error


@needs_napari
def test_manifest_and_sample(make_napari_viewer):
    """The npe2 manifest is found through the entry point; the sample image opens with its pixel size."""
    import npe2

    manifest = npe2.PluginManifest.from_file(ROOT / "synseg" / "napari" / "napari.yaml")
    assert {w.display_name for w in manifest.contributions.widgets} == {"SynSeg"}
    viewer = make_napari_viewer()
    viewer.open_sample("synseg", "vesicles")
    layer = viewer.layers[-1]
    assert layer.data.shape == (384, 384) and layer.scale[-1] == pytest.approx(0.1)


@needs_napari
def test_widget_segments_and_redecides(make_napari_viewer, qtbot, models, spots_image, monkeypatch):
    """Segment through the button: probability, Labels and Points layers on the image's scale; a knob
    re-decides on the kept maps without the network."""
    from synseg.napari import _widget, engine
    from synseg.segment import qc

    image, px = spots_image
    viewer = make_napari_viewer()
    layer = viewer.add_image(image, name="cell", scale=(px, px), translate=(1.0, 2.0))
    widget = _widget.SynSegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.image.value is layer and widget.pixel_size.value == pytest.approx(px)
    assert widget.model.value == engine.tasks.TASKS["vesicle"].model_path
    widget.model.value = models["vesicle"]
    widget.contrast_cut.value = False  # (no knob effect yet: nothing segmented)
    widget.segment_button.native.click()
    _wait(qtbot, widget)
    labels, points, prob = viewer.layers["cell mask"], viewer.layers["cell spots"], viewer.layers["cell probability"]
    assert labels._type_string == "labels" and points._type_string == "points" and prob._type_string == "image"
    for out in (labels, points, prob):
        np.testing.assert_allclose(out.scale, layer.scale)
        np.testing.assert_allclose(out.translate, layer.translate)
    n = len(points.data)
    assert n > 0 and labels.data.max() == n and prob.data.shape == image.shape
    assert {"snr", "contrast", "area", "integrated_intensity", "mean_intensity"} <= set(points.features.columns)
    assert widget.progress.value == widget.progress.max
    assert widget.quality.value == qc.verdict(widget.result.qc) and widget.quality.value.startswith("qc: ")
    assert labels.metadata["qc"]["qc"] == widget.result.qc["qc"] and "qc_peak_snr" in labels.metadata["qc"]

    calls = []
    original = widget.run_state.segmenter.probabilities
    monkeypatch.setattr(widget.run_state.segmenter, "probabilities",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    snr = points.features["snr"].to_numpy()
    widget.min_snr.value = round(float(np.median(snr[snr > 0])), 2)  # about half the brighter spots are below it
    _wait(qtbot, widget)
    assert 0 < len(viewer.layers["cell spots"].data) < n
    assert viewer.layers["cell mask"].data.max() == len(viewer.layers["cell spots"].data)
    assert (viewer.layers["cell spots"].features["snr"] >= widget.min_snr.value).all()
    widget.threshold.value = 0.95
    _wait(qtbot, widget)
    assert widget.result.threshold == pytest.approx(0.95)
    assert calls == []  # neither knob ran the network


@needs_napari
def test_widget_shows_the_quality_check(make_napari_viewer, qtbot, models, spots_image):
    """The quality label: "qc: ok" or the reasons for a normal image; a mostly-zero field (96% of the pixels at
    0) shows mostly_zero with its advice, in the label and in the mask layer's metadata."""
    from synseg.napari import _widget
    from synseg.segment import qc

    image, px = spots_image
    empty = np.clip(image.astype(np.float64) - np.percentile(image, 96), 0, None).astype(image.dtype)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="fine", scale=(px, px))
    widget = _widget.SynSegWidget(viewer)
    widget.model.value = models["vesicle"]
    widget.segment_button.native.click()
    _wait(qtbot, widget)
    assert widget.quality.value.startswith("qc: ") and "mostly_zero" not in widget.quality.value
    viewer.add_image(empty, name="empty", scale=(px, px))
    widget.image.value = viewer.layers["empty"]
    widget.segment_button.native.click()
    _wait(qtbot, widget)
    assert "mostly_zero" in widget.quality.value.split("(")[0] and qc.ADVICE["mostly_zero"] in widget.quality.value
    assert "mostly_zero" in viewer.layers["empty mask"].metadata["qc"]["qc"].split("+")
    assert float(viewer.layers["empty mask"].metadata["qc"]["qc_zero"]) > 0.9


@needs_napari
def test_widget_time_lapse_tracks(make_napari_viewer, qtbot, models):
    """A T, Y, X stack: Points in 3D, a Tracks layer when tracking is on; scale (T, Y, X) follows the input."""
    from synseg.napari import _sample, _widget

    movie, px, interval = _sample.synthetic("vesicle", size=64, frames=4, seed=5)
    viewer = make_napari_viewer()
    layer = viewer.add_image(movie, name="movie", scale=(interval, px, px))
    widget = _widget.SynSegWidget(viewer)
    widget.model.value = models["vesicle"]
    widget.contrast_cut.value = False
    widget.track.value = True
    widget.segment_button.native.click()
    _wait(qtbot, widget)
    points = viewer.layers["movie spots"]
    assert points.data.shape[1] == 3 and set(points.data[:, 0]) <= set(range(4))
    tracks = viewer.layers["movie tracks"]
    assert tracks._type_string == "tracks" and len(tracks.data) == len(points.data)
    np.testing.assert_allclose(tracks.scale, layer.scale)
    assert viewer.layers["movie mask"].data.shape == movie.shape
    widget.track.value = False  # tracking off: the layer goes, nothing else is recomputed
    _wait(qtbot, widget)
    assert "movie tracks" not in viewer.layers


@needs_napari
def test_widget_filaments_and_cancel(make_napari_viewer, qtbot, models, monkeypatch):
    """The filament task: its model by default, no spot knobs, a Labels mask and no Points; Cancel stops a run."""
    from synseg.napari import _widget, engine

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).normal(100, 10, (64, 64)).astype(np.float32), name="fil")
    widget = _widget.SynSegWidget(viewer)
    widget.task.value = "cytoskeleton"
    assert widget.model.value == engine.tasks.TASKS["cytoskeleton"].model_path and not widget.min_snr.visible
    widget.model.value = models["cytoskeleton"]
    widget.segment_button.native.click()
    _wait(qtbot, widget)
    assert viewer.layers["fil mask"]._type_string == "labels" and "fil spots" not in viewer.layers

    def endless(self):
        for k in range(10 ** 6):
            time.sleep(0.01)
            yield k, 10 ** 6

    monkeypatch.setattr(engine.Run, "predict", endless)
    widget.segment_button.native.click()
    qtbot.waitUntil(lambda: widget.progress.value > 2, timeout=30_000)
    widget.cancel_button.native.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    assert widget.status.value.startswith("cancelled") and widget.segment_button.enabled


@needs_napari
def test_widget_reports_a_missing_model(make_napari_viewer, qtbot, tmp_path):
    from synseg.napari import _widget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.uint16), name="x")
    widget = _widget.SynSegWidget(viewer)
    widget.model.value = tmp_path / "none.pth"
    widget.segment_button.native.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    assert "not found" in widget.error and "cell mask" not in viewer.layers
