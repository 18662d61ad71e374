"""Shared test setup: the repository root on sys.path, few threads so tests stay quick on 2 cores."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")
# exported ONNX graphs (predict.onnx_cache_dir) go to a folder of this test run, never the user's ~/.cache;
# the folder is removed when the run ends
if "SYNSEG_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["SYNSEG_CACHE_DIR"] = tempfile.mkdtemp(prefix="synseg_test_cache_")
    atexit.register(shutil.rmtree, os.environ["SYNSEG_CACHE_DIR"], ignore_errors=True)

import torch  # noqa: E402

torch.set_num_threads(1)  # faster than 2 on a busy 2-core box


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny fp32 checkpoints: a vesicle model trained (nominally) at 0.1 um/px, a cytoskeleton model without one."""
    import unet
    from tests.test_predict import sharp_model

    d = tmp_path_factory.mktemp("models")
    ves, cyto = d / "ves.pth", d / "cyto.pth"
    unet.save_checkpoint(ves, sharp_model(seed=1), task="vesicle", normalization={"mode": "percentile"},
                         pixel_size_um=0.1)
    unet.save_checkpoint(cyto, sharp_model(first_kernel=5, seed=2), task="cytoskeleton",
                         normalization={"mode": "standardize"})
    return {"vesicle": ves, "cytoskeleton": cyto}
