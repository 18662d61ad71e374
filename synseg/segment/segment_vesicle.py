"""Segment vesicles (and other bright puncta) in TIFF images with a SynSeg U-Net.

Example:
    python SynSeg_Vesicle.py -i images/ -o masks/ --overlay --object-csv

For every input NAME.tif it writes OUTDIR/NAME_mask.tif (uint8, 0/255, same shape, axes and pixel size
as the input), and OUTDIR/summary.csv with the vesicle count and mean area per file. Touching vesicles are
split by a seeded watershed so that each connected object in the mask is one vesicle (--no-split to turn
off). The batch lives in batch.py, the engine in predict.py (tiling.py, postprocess.py).
Stopped half-way (Ctrl-C, kill, crash)? Run the same command again: finished files are skipped and
the tables come out as if the run had never stopped.

Time-lapses (TYX): every frame is segmented; with --track the vesicles of consecutive frames are linked
(tracking.py: laptrack's linking, same tracks) into OUTDIR/tracks.csv and OUTDIR/track_summary.csv (duration,
mean speed in um/s when the pixel size and frame interval are known):
    python SynSeg_Vesicle.py -i movie.tif -o out/ --track
"""
import argparse
import sys

from synseg.segment import batch

TASK = "vesicle"


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments (shared with SynSeg_Cytoskeleton.py; vesicle defaults)."""
    return batch.get_args_parser(TASK, description=__doc__)


def main(args: argparse.Namespace) -> int:
    """Segment every input; exit code 0 when all succeeded, 1 if any file failed, 2 on bad usage."""
    return batch.run(args, TASK)


def run() -> None:
    """The console command `synseg-vesicle`: parse the command line, exit with main's code."""
    sys.exit(main(get_args_parser().parse_args()))


if __name__ == "__main__":
    run()
