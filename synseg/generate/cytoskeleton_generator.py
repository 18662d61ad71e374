"""Generate synthetic 8-bit cytoskeleton images (filaments, asters, bundles, ER, mitochondria) with exact masks.

Example:
    python Cytoskeleton_generator.py --output-dir DATA --num-images 1000 --seed 0 --workers 2 --preview

Writes DATA/{train,val}/img/NNNNN.tif (8-bit single-channel TIFF, pixel size in the ImageJ tags),
DATA/{train,val}/mask/NNNNN.npy (uint8 0/1: every pixel within --mask-half-width of an in-focus
filament centreline, tube or sheet) and DATA/generator.json (all parameters and the seed); with
--preview also DATA/preview.png. Structures: filaments.py; optics, cells, background and camera:
synth.py; every range flag is drawn per image, and image k depends only on (--seed, k).
With --frames N (N > 1) each sample is a time-lapse: NNNNN.tif a TYX stack (frame interval and pixel size
in the ImageJ tags) and NNNNN.npy its TYX mask;
motion, bleaching and per-frame noise: video.py.
"""
import argparse
import sys

from synseg import cli
from synseg.generate import dataset
from synseg.generate import filaments
from synseg.generate import synth
from synseg.generate import video

BIT_DEPTH = 8


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments: output, optics, camera, background (synth.py) and structures (filaments.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    groups = dataset.add_common_args(parser)
    groups["output"].add_argument("--output_size", dest="image_size", type=int, default=argparse.SUPPRESS,
                                  help="original SynSeg spelling of --image-size")
    # filament images carry more diffuse signal than vesicle images: cytoplasm up to 2.5 times as
    # bright as the fibres over it (Airyscan actin: faint stress fibres on a bright cell body, a sharp
    # bright cell edge that is not a filament) and thick haze (C. elegans epithelia)
    parser.set_defaults(cytoplasm=[0.0, 2.5], haze=[0.0, 0.5])
    # Faint tubules beside saturated perinuclear sheets, bright cell bodies and haze ramps.
    parser.set_defaults(bright_region_prob=0.3)
    filaments.add_args(parser)
    video.add_args(parser)
    return parser


def render_one(rng, args: argparse.Namespace):
    """One image from parsed arguments: (uint8 HxW image, uint8 0/1 HxW mask, None)."""
    return synth.render_one(rng, synth.scene_from_args(args, filaments.Filaments, BIT_DEPTH))


def main(args: argparse.Namespace) -> int:
    """Write the dataset; returns the exit code."""
    return dataset.generate(args, filaments.Filaments, kind="cytoskeleton", bit_depth=BIT_DEPTH)


def run() -> None:
    """The console command `synseg-generate-cytoskeleton`: parse the command line, exit with main's code."""
    sys.exit(main(get_args_parser().parse_args()))


if __name__ == "__main__":
    run()
