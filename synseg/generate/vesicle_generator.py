"""Generate synthetic 16-bit vesicle / puncta images with exact masks and per-spot tables.

Example:
    python Vesicle_generator.py --output-dir DATA --num-images 1000 --seed 0 --workers 2 --preview

Writes DATA/{train,val}/img/NNNNN.tif (16-bit single-channel TIFF, pixel size in the ImageJ tags),
DATA/{train,val}/mask/NNNNN.npy (uint8 0/1) and DATA/{train,val}/mask/NNNNN.csv (one row per labelled
vesicle: y, x (the centre of pixel (i, j) is (i, j)), radius in px, brightness; a header only when
none is labelled), DATA/generator.json (every parameter and the seed) and, with --preview,
DATA/preview.png. Vesicles: vesicles.py; optics, cells, background and camera: synth.py; every range
flag is drawn per image, and image k depends only on (--seed, k).
With --frames N (N > 1) each sample is a time-lapse: NNNNN.tif a TYX stack (frame interval and pixel size
in the ImageJ tags) and NNNNN.npy its TYX mask, the table one row per vesicle and frame with frame and track_id;
motion, bleaching and per-frame noise: video.py.
"""
import argparse
import sys

from synseg import cli
from synseg.generate import dataset
from synseg.generate import synth
from synseg.generate import vesicles
from synseg.generate import video

BIT_DEPTH = 16


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments: output, optics, camera, background (synth.py) and vesicles (vesicles.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    dataset.add_common_args(parser)
    # Apparent spot sigma in real images: ~1.1-1.2 px (smFISH, beads), up to ~2 px at fine sampling and
    # ~0.5 px at 0.16 um/px; 0.1 um/px with the diffraction-limited 0.78 px times 0.7-2.2 spans that.
    parser.set_defaults(psf_scale=[0.7, 2.2])
    # Spot images often come from processing pipelines (background subtracted, zero-clipped) and from
    # tissue with autofluorescent cell bodies and granules; a share of the training data covers both.
    parser.set_defaults(autofluorescence_prob=0.3, subtracted_prob=0.2)
    # Faint spots beside bright cell bodies, saturated patches and haze ramps: the local contrast the
    # network reads must not let a bright region hide the spots next to it.
    parser.set_defaults(bright_region_prob=0.3)
    vesicles.add_args(parser)
    video.add_args(parser)
    return parser


def render_one(rng, args: argparse.Namespace):
    """One image from parsed arguments: (uint16 HxW image, uint8 0/1 HxW mask, rows of the labelled vesicles)."""
    return synth.render_one(rng, synth.scene_from_args(args, vesicles.Vesicles, BIT_DEPTH))


def main(args: argparse.Namespace) -> int:
    """Write the dataset; returns the exit code."""
    return dataset.generate(args, vesicles.Vesicles, kind="vesicle", bit_depth=BIT_DEPTH)


def run() -> None:
    """The console command `synseg-generate-vesicles`: parse the command line, exit with main's code."""
    sys.exit(main(get_args_parser().parse_args()))


if __name__ == "__main__":
    run()
