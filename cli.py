"""Command-line pieces every SynSeg script shares: the help formatter and one-line error reporting.

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
"""
from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each flag; the module docstring printed as written."""
