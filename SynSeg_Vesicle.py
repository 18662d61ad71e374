"""Segment vesicles (and other bright puncta) in TIFF images with a SynSeg U-Net.

Example:
    python SynSeg_Vesicle.py -i images/ -o masks/ --overlay --object-csv

The code is synseg/segment/segment_vesicle.py (the synseg package); installed with `pip install .`,
the same command is `synseg-vesicle`. `python SynSeg_Vesicle.py --help` lists every flag.
"""
import sys

from synseg.segment.segment_vesicle import TASK, get_args_parser, main  # noqa: F401  (importable as before)

if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
