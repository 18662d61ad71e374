"""docs/napari_screenshot.png: the napari viewer with the SynSeg widget's results on a synthetic vesicle image.

    python scripts/make_screenshot.py --output docs/napari_screenshot.png     (make screenshot)

Opens the plugin's sample image (the vesicle generator, seed fixed), docks the SynSeg widget, presses
Segment with the shipped vesicle model and saves the whole window. Needs an X display for napari's OpenGL
canvas: without DISPLAY it starts Xvfb (Debian's xvfb) and stops it at the end.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def start_display() -> None:
    """Xvfb on a free display number when there is no DISPLAY (synseg.napari._display.start_xvfb)."""
    from synseg.napari._display import start_xvfb

    if not os.environ.get("DISPLAY") and start_xvfb("1600x1000x24") is None:
        sys.exit("error: no X display and no Xvfb; install Debian's xvfb (apt-get install xvfb) or set DISPLAY")


def write_window(viewer, path: Path) -> None:
    """The whole window as a PNG. Under Qt's offscreen platform a window grab leaves the OpenGL canvas black, so
    the canvas is rendered on its own (vispy's SceneCanvas.render, an offscreen framebuffer) and pasted in."""
    import numpy as np
    from qtpy.QtCore import QPoint
    from qtpy.QtWidgets import QApplication, QWidget

    window = viewer.window._qt_window
    for toast in window.findChildren(QWidget):
        if type(toast).__name__ == "NapariQtNotification":
            toast.close()
    QApplication.processEvents()
    shot = window.grab().toImage()
    ratio = shot.devicePixelRatio()
    width, height = shot.width(), shot.height()
    ptr = shot.convertToFormat(shot.Format.Format_RGBA8888).constBits()
    ptr.setsize(height * width * 4)
    frame = np.frombuffer(ptr, np.uint8).reshape(height, width, 4).copy()
    native = viewer.window._qt_viewer.canvas.native
    corner = native.mapTo(window, QPoint(0, 0))
    y0, x0 = int(corner.y() * ratio), int(corner.x() * ratio)
    h, w = int(native.height() * ratio), int(native.width() * ratio)
    import cv2

    canvas = viewer.window._qt_viewer.canvas._scene_canvas.render()  # vispy's own render: an offscreen framebuffer
    if canvas.shape[:2] != (h, w):
        canvas = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA)
    frame[y0:y0 + h, x0:x0 + w] = canvas[:height - y0, :width - x0]

    if not cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGBA2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"{path}: could not write the PNG")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", type=Path, default=Path("docs/napari_screenshot.png"), help="PNG to write")
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default: the shipped vesicle model)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the segmentation")
    args = p.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    start_display()
    import napari
    from qtpy.QtWidgets import QApplication

    from synseg.napari import _widget

    viewer = napari.Viewer(show=True, title="SynSeg in napari")
    viewer.window.resize(1280, 780)
    viewer.open_sample("synseg", "vesicles")
    widget = _widget.SynSegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SynSeg", area="right")
    if args.model:
        widget.model.value = args.model
    widget.segment_button.native.click()
    end = time.monotonic() + args.timeout
    while (widget.busy or widget.result is None) and widget.error is None and time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.05)
    if widget.error or widget.result is None:
        print(f"error: segmentation did not finish: {widget.error or 'timeout'}", file=sys.stderr)
        return 1
    base = viewer.layers[0].name
    viewer.layers[f"{base} probability"].visible = False
    viewer.layers.selection.active = viewer.layers[f"{base} spots"]
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_window(viewer, args.output)
    print(f"{args.output}: {len(widget.result.objects)} spots; {widget.status.value}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
