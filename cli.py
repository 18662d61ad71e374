"""Command-line pieces every SynSeg script shares: the help formatters.

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
"""
from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each flag; the module docstring printed as written."""


class QuietHelpFormatter(HelpFormatter):
    """As HelpFormatter, but no "(default: ...)" for defaults of None or False, or where the help names its default."""

    def _get_help_string(self, action):
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)
