"""Where a training process runs (device, autocast dtype, memory format, DDP rank and size) and the one
collective the loop needs; training.setup_runtime builds the Runtime."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Runtime:
    """Where this process runs: device, autocast dtype, memory format, DDP rank and size."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        """True on the one process that prints and writes files."""
        return self.rank == 0

    def describe(self) -> str:
        """One line for the log."""
        prec = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + grad scaler"}
        text = f"device {self.device}, {prec[self.amp_dtype]}, {'channels_last' if self.channels_last else 'NCHW'}"
        return text + (f", DDP world size {self.world_size}" if self.world_size > 1 else "")


def all_reduce_sum(values: list[float], rt: Runtime) -> list[float]:
    """Sum a few numbers over all DDP processes (identity when not distributed)."""
    if rt.world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=rt.device)
    dist.all_reduce(t)
    return t.tolist()
