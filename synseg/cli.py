"""Command-line pieces every SynSeg script shares: the help formatters and the numeric flag types.

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


def number(kind=float, low=None, high=None, above=None, below=None):
    """An argparse type: a finite number of `kind` (float or int) in the allowed interval (low/high inclusive,
    above/below exclusive), else one line naming the allowed values. nan and inf are always refused."""
    import math

    def parse(text: str):
        try:
            value = kind(text) if kind is int else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        bad = ((low is not None and value < low) or (high is not None and value > high)
               or (above is not None and value <= above) or (below is not None and value >= below))
        if bad:
            allowed = " and ".join(s for s in ((f">= {low:g}" if low is not None else ""),
                                               (f"> {above:g}" if above is not None else ""),
                                               (f"<= {high:g}" if high is not None else ""),
                                               (f"< {below:g}" if below is not None else "")) if s)
            raise argparse.ArgumentTypeError(f"{text} is out of range (allowed: {allowed})")
        return value

    parse.__name__ = "integer" if kind is int else "number"  # argparse names it: "invalid number value"
    return parse


def finite_float(low: float | None = None, high: float | None = None, above: float | None = None,
                 below: float | None = None):
    """An argparse type: a finite float within [low, high] (above/below: exclusive bounds)."""
    return number(float, low, high, above, below)


def finite_int(low: int | None = None, high: int | None = None):
    """An argparse type: an integer within [low, high]."""
    return number(int, low, high)
