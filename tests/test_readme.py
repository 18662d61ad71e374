"""The README's commands, run as a new user would (at small sizes), and its stated defaults, so the README
cannot go stale.

Which commands (a mechanical rule, no list of our own): every line of every ```bash block of README.md that,
split as a shell splits it (comments dropped), starts with `python` followed by one of this repository's root
scripts (a *.py file at the root). They run in README order, in one temporary folder, so a command may use
what an earlier one wrote (the training data, the trained model), exactly as written except for:

- sizes: `--num-images N` -> 20 (two validation images at the default --val-fraction), `--epochs N` -> 1,
  `--base-channels N` -> 4, `--crop-size N` -> 32;
- `models/...` -> the repository's models/ folder (the README's commands run from the clone);
- the user's own images the README assumes, `my_tiffs/` and `cell01.tif`, are made first: small synthetic
  blob images (INPUTS below);
- export_model.py is left out when ONNX (requirements-export.txt) is not installed.

Each command must exit 0 without a traceback.
"""
import importlib.util
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from synseg import tiffio
from tests.conftest import ROOT
from tests.test_predict import smooth_noise

README = ROOT / "README.md"
SMALL = {"--num-images": "20", "--epochs": "1", "--base-channels": "4", "--crop-size": "32"}
INPUTS = ("my_tiffs/", "cell01.tif")  # the user's own images the README's commands start from


def root_scripts() -> set[str]:
    return {p.name for p in ROOT.glob("*.py")}


def readme_commands(text: str) -> list[list[str]]:
    """The commands of the rule in the module docstring, as argument lists (python and the script first)."""
    scripts = root_scripts()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if len(words) >= 2 and words[0] == "python" and words[1] in scripts:
                commands.append(words)
    return commands


def small(words: list[str]) -> list[str]:
    """The substitutions of the module docstring."""
    out = []
    for k, w in enumerate(words):
        if k and words[k - 1] in SMALL:
            w = SMALL[words[k - 1]]
        elif w.startswith("models/"):
            w = str(ROOT / w)
        out.append(w)
    return out


def make_inputs(folder):
    """Small 16-bit blob images where the README expects the user's own."""
    for k, name in enumerate(["my_tiffs/a.tif", "my_tiffs/b.tif", "cell01.tif"]):
        image = np.clip(smooth_noise((96, 96), seed=k, sigma=1.5), 0, None) * 3000 + 100
        tiffio.write_tiff(folder / name, image.astype(np.uint16), pixel_size_um=0.1)


def test_the_rule_finds_every_stage():
    commands = readme_commands(README.read_text(encoding="utf-8"))
    scripts = {c[1] for c in commands}
    assert {"SynSeg_Vesicle.py", "SynSeg_Cytoskeleton.py", "Vesicle_generator.py", "Cytoskeleton_generator.py",
            "train_vesicle_seg.py", "train_cytoskeleton_seg.py", "evaluate.py"} <= scripts, scripts
    assert any(w in c for c in commands for w in INPUTS)


def test_readme_commands_run_as_written(tmp_path):
    make_inputs(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    onnx = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxruntime") is not None
    ran = 0
    for words in readme_commands(README.read_text(encoding="utf-8")):
        if words[1] == "export_model.py" and not onnx:
            continue
        argv = [sys.executable, str(ROOT / words[1]), *small(words)[2:]]
        r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        shown = " ".join(words)
        assert r.returncode == 0, f"README command failed: {shown}\n{r.stderr[-3000:]}"
        assert "Traceback" not in r.stderr, f"{shown}\n{r.stderr[-3000:]}"
        ran += 1
    assert ran >= 10


# --------------------------------------------------------------------------- defaults the README states

def parsers() -> list:
    """The argument parsers of the root scripts a user runs (export_model.py's needs the export packages)."""
    from synseg.generate import cytoskeleton_generator, vesicle_generator
    from synseg.segment import batch
    from synseg.train import train_cytoskeleton, train_vesicle
    import evaluate

    return [vesicle_generator.get_args_parser(), cytoskeleton_generator.get_args_parser(),
            train_vesicle.get_args_parser(), train_cytoskeleton.get_args_parser(),
            batch.get_args_parser("vesicle"), batch.get_args_parser("cytoskeleton"), evaluate.get_args_parser()]


def stated_defaults(text: str) -> list[tuple[str, str]]:
    """(flag, value) for every "`--flag`, default X", "`--flag`, default `X`" and "`--flag X` (default)" of the
    README."""
    text = " ".join(text.split())
    found = re.findall(r"`(--[a-z][a-z-]*)`,? default `?(-?[0-9.]+)\b", text)
    found += re.findall(r"`(--[a-z][a-z-]*) (-?[0-9.]+)`\**,? \(default\)", text)
    return found


def test_readme_defaults_are_the_flags_defaults():
    stated = stated_defaults(README.read_text(encoding="utf-8"))
    assert len(stated) >= 4, stated
    actions = {}
    for parser in parsers():
        for action in parser._actions:
            for option in action.option_strings:
                actions.setdefault(option, []).append(action.default)
    for flag, value in stated:
        assert flag in actions, f"README states a default for {flag}, which no script has"
        defaults = [d[0] if isinstance(d, (tuple, list)) else d for d in actions[flag]]
        assert any(number(d) == pytest.approx(float(value)) for d in defaults), \
            f"README: {flag} default {value}; the scripts: {actions[flag]}"


def number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
