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


def finite_float(low: float | None = None, high: float | None = None):
    """An argparse type: a finite float within [low, high], else one line naming the allowed values."""
    import math

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if (low is not None and value < low) or (high is not None and value > high):
            allowed = " and ".join(s for s in ((f">= {low:g}" if low is not None else ""),
                                               (f"<= {high:g}" if high is not None else "")) if s)
            raise argparse.ArgumentTypeError(f"{text} is out of range (allowed: {allowed})")
        return value

    parse.__name__ = "number"  # argparse names the type in its message: "invalid number value"
    return parse
