"""Segment vesicles in a TIFF or a folder of TIFFs.

Example:
    python SynSeg_Vesicle.py -i images/ -o masks/

Not built yet: this script is delivered by issue 5. Only --help works.
"""
import argparse
import sys


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    return argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def main(args: argparse.Namespace) -> int:
    """Refuse to pretend: the real script lands with issue 5."""
    print("SynSeg_Vesicle.py: not built yet (issue 5)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
