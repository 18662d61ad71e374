"""Segment cytoskeleton filaments (microtubules, actin, ER tubules) in TIFF images with a SynSeg U-Net.

Example:
    python SynSeg_Cytoskeleton.py -i images/ -o masks/ --overlay

The code is synseg/segment/segment_cytoskeleton.py (the synseg package); installed with `pip install .`,
the same command is `synseg-cytoskeleton`. `python SynSeg_Cytoskeleton.py --help` lists every flag.
"""
import sys

from synseg.segment.segment_cytoskeleton import TASK, get_args_parser, main  # noqa: F401  (importable as before)

if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
