"""Export a SynSeg checkpoint as a bioimage.io model package (Fiji/deepImageJ, ilastik, QuPath, napari) or as ONNX.

Example:
    python export_model.py models/vesicle.pth -o exports/synseg-vesicle.zip --check

The code is synseg/export.py (the synseg package); installed with `pip install .`,
the same command is `synseg-export`. `python export_model.py --help` lists every flag.
"""
import sys

from synseg.export import get_args_parser, main  # noqa: F401  (importable as before)

if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
