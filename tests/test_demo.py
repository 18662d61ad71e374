"""demo.py's output folder: only a folder the demo made, holding only its outputs, is ever cleared."""
import shutil
import subprocess
import sys

import pytest

import demo
from tests.conftest import ROOT


def earlier_run(out):
    """A folder as a finished demo run leaves it."""
    assert demo.prepare_output(out) is None
    (out / "REPORT.md").write_text("# old report\n")
    (out / "demo.log").write_text("$ Vesicle_generator.py --output-dir x\n")
    (out / "vesicle" / "masks").mkdir(parents=True)
    (out / "vesicle" / "masks" / "a_mask.tif").write_bytes(b"old")
    return out


def test_new_and_empty_folders_are_used_and_marked(tmp_path):
    new = tmp_path / "a" / "new"
    assert demo.prepare_output(new) is None
    assert [p.name for p in new.iterdir()] == [demo.MARKER]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert demo.prepare_output(empty) is None and (empty / demo.MARKER).is_file()


def test_an_earlier_demo_folder_is_emptied(tmp_path):
    out = earlier_run(tmp_path / "out")
    assert demo.prepare_output(out) is None
    assert [p.name for p in out.iterdir()] == [demo.MARKER]


def test_a_demo_folder_from_before_the_marker_is_recognised_by_its_log(tmp_path):
    out = earlier_run(tmp_path / "out")
    (out / demo.MARKER).unlink()
    assert demo.prepare_output(out) is None
    assert [p.name for p in out.iterdir()] == [demo.MARKER]


@pytest.mark.parametrize("change", ["foreign file", "no marker, no log", "other log"])
def test_anything_else_is_refused_and_left_alone(tmp_path, change):
    out = earlier_run(tmp_path / "out")
    if change == "foreign file":
        (out / "notes.txt").write_text("mine")
    elif change == "no marker, no log":
        (out / demo.MARKER).unlink()
        (out / "demo.log").unlink()
    else:
        (out / demo.MARKER).unlink()
        (out / "demo.log").write_text("my own log\n")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    reason = demo.prepare_output(out)
    assert reason and str(out) in reason and "\n" not in reason
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_a_file_is_refused(tmp_path):
    f = tmp_path / "report.md"
    f.write_text("mine")
    assert "is a file" in demo.prepare_output(f) and f.read_text() == "mine"


def test_output_dir_dot_in_a_checkout_is_refused_and_nothing_deleted(tmp_path):
    """`demo.py --output-dir .` from a checkout: one line, exit 2, every file still there.

    Run in a copy of the checkout's shape (demo.py and the modules it imports, placeholder models), so a bug
    cannot touch the real one.
    """
    checkout = tmp_path / "checkout"
    (checkout / "models").mkdir(parents=True)
    shutil.copy(ROOT / "demo.py", checkout / "demo.py")
    shutil.copytree(ROOT / "synseg", checkout / "synseg", ignore=shutil.ignore_patterns("__pycache__"))
    for model in ("vesicle.pth", "cytoskeleton.pth"):
        (checkout / "models" / model).write_bytes(b"placeholder")
    (checkout / "README.md").write_text("keep me\n")
    before = sorted(p.relative_to(checkout) for p in checkout.rglob("*"))
    r = subprocess.run([sys.executable, "demo.py", "--output-dir", "."], cwd=checkout, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("demo: --output-dir") and "remove it yourself" in lines[0]
    assert sorted(p.relative_to(checkout) for p in checkout.rglob("*") if "__pycache__" not in p.parts) == before
