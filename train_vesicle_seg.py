"""Train the vesicle U-Net on generated data.

Example:
    python train_vesicle_seg.py --data-dir DATA --epochs 5 --device auto

Not built yet: this script is delivered by issue 4. Only --help works.
"""
import argparse
import sys


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    return argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def main(args: argparse.Namespace) -> int:
    """Refuse to pretend: the real script lands with issue 4."""
    print("train_vesicle_seg.py: not built yet (issue 4)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
