"""Generate synthetic 8-bit cytoskeleton images (filaments, asters, bundles, ER, mitochondria) with exact masks.

Example:
    python Cytoskeleton_generator.py --output-dir DATA --num-images 1000 --seed 0 --workers 2 --preview

Writes DATA/{train,val}/img/NNNNN.tif (8-bit single-channel TIFF, pixel size in the ImageJ tags),
DATA/{train,val}/mask/NNNNN.npy (uint8 0/1: every pixel within --mask-half-width of an in-focus
filament centreline, tube or sheet) and DATA/generator.json (all parameters and the seed); with
--preview also DATA/preview.png. Structures come from filaments.py, optics, cells, background and
camera from synth.py; every range flag is drawn per image, and image k depends only on (--seed, k).
"""
import argparse
import sys

import filaments
import synth


def render_one(rng, args):
    """One image: (uint8 HxW image, uint8 0/1 HxW mask, None). Used by the workers and the benchmark."""
    shape = (args.image_size, args.image_size)
    psf = synth.draw_psf_sigma(rng, args)
    cells = synth.cell_layer(rng, shape, args)
    in_focus, out_of_focus, mask = filaments.render_structures(rng, shape, args.pixel_size, psf, args,
                                                               cells=cells["cells"])
    image = synth.finish_image(rng, in_focus, out_of_focus, cells, args, 8, psf_sigma=psf)
    return image, mask, None


class _Parser(synth.ArgumentParser):
    """synth's parser (common checks after parsing) plus the structure checks."""

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = super().parse_known_args(args, namespace)
        if hasattr(ns, "filaments"):
            filaments.check_filament_args(self, ns)
        return ns, rest


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments: output, optics, camera, background (synth.py) and structures (filaments.py)."""
    parser = _Parser(description=__doc__)
    groups = synth.add_common_args(parser, default_image_size=512, default_pixel_size=0.1)
    groups["output"].add_argument("--output_size", dest="image_size", type=int, default=argparse.SUPPRESS,
                                  help="original SynSeg spelling of --image-size")
    filaments.add_filament_args(parser)
    # filament images carry more diffuse signal than vesicle images: cytoplasm up to 2.5 times as
    # bright as the fibres over it (Airyscan actin: faint stress fibres on a bright cell body, a sharp
    # bright cell edge that is not a filament) and thick haze (C. elegans epithelia)
    parser.set_defaults(cytoplasm=[0.0, 2.5], haze=[0.0, 0.5])
    return parser


def main(args: argparse.Namespace) -> int:
    """Write the dataset; returns the exit code."""
    return synth.generate_dataset(args, render_one, kind="cytoskeleton", bit_depth=8)


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
