"""Shared test setup: the repository root on sys.path, few threads so tests stay quick on 2 cores."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)  # faster than 2 on a busy 2-core box
