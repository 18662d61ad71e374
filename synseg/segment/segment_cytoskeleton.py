"""Segment cytoskeleton filaments (microtubules, actin, ER tubules) in TIFF images with a SynSeg U-Net.

Example:
    python SynSeg_Cytoskeleton.py -i images/ -o masks/ --overlay

For every input NAME.tif it writes OUTDIR/NAME_mask.tif (uint8, 0/255, same shape, axes and pixel size
as the input), and OUTDIR/summary.csv with the total skeleton length and the number of junctions per
file. The batch lives in batch.py, the engine in predict.py (tiling.py, postprocess.py).
Stopped half-way (Ctrl-C, kill, crash)? Run the same command again: finished files are skipped and
the tables come out as if the run had never stopped.
"""
import argparse
import sys

from synseg.segment import batch

TASK = "cytoskeleton"


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments (shared with SynSeg_Vesicle.py; cytoskeleton defaults)."""
    return batch.get_args_parser(TASK, description=__doc__)


def main(args: argparse.Namespace) -> int:
    """Segment every input; exit code 0 when all succeeded, 1 if any file failed, 2 on bad usage."""
    return batch.run(args, TASK)


def run() -> None:
    """The console command `synseg-cytoskeleton`: parse the command line, exit with main's code."""
    sys.exit(main(get_args_parser().parse_args()))


if __name__ == "__main__":
    run()
