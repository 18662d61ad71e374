"""SynSeg in napari: a dock widget (Plugins > SynSeg), sample images, and a reader for objects.csv / tracks.csv.

Installed with `pip install .[napari]` (or `make`); napari finds it through the `napari.manifest` entry
point (napari.yaml beside this file). Nothing here is imported by the rest of synseg, and napari and Qt are
imported only inside the widget module, so the command-line install needs neither.
"""
