"""Distillation: a trained model (the teacher) softens the training targets of a new one (the student).

    teacher = Teacher.load(path, task, rt, weight=0.5)
    y = teacher.targets(x, y)       # (1 - weight) x the generator's mask + weight x the teacher's probability

The teacher sees the very crop the student sees (same augmentation, same normalisation: a teacher trained
with another normalisation is refused), in eval mode and without gradients, so a small network can learn
what a larger one learned over many more steps (the faint spots a compact vesicle network trained from
scratch misses) while the generator's exact mask keeps it honest. Both terms go through the run's own loss:
BCE and the soft Dice / clDice take soft targets as they are. Loading never runs code from the file
(unet.load_model: weights_only=True).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

import unet


class DistillError(ValueError):
    """The teacher cannot teach this run (missing file, other task or normalisation)."""


@dataclass
class Teacher:
    model: torch.nn.Module
    weight: float  # share of the teacher's probability in the target, 0 < weight <= 1
    amp_dtype: torch.dtype | None
    device_type: str
    record: dict  # what the checkpoints record about the teacher

    @classmethod
    def load(cls, path: Path, task, rt, weight: float) -> Teacher:
        """The teacher from a checkpoint of the same task and normalisation, on the run's device."""
        path = Path(path)
        if not path.is_file():
            raise DistillError(f"--teacher: {path} not found")
        if not 0.0 < weight <= 1.0:
            raise DistillError(f"--distill-weight {weight}: use a value in (0, 1]")
        model, info = unet.load_model(path, rt.device)
        if info.get("task") not in (None, task.name):
            raise DistillError(f"--teacher: {path} is a {info.get('task')} model, not a {task.name} model")
        if info.get("normalization") != task.normalization:
            raise DistillError(f"--teacher: {path} was trained with normalisation {info.get('normalization')}, "
                               f"this run uses {task.normalization}; a teacher must see what the student sees")
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        if rt.channels_last:
            model.to(memory_format=torch.channels_last)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        return cls(model, float(weight), rt.amp_dtype, rt.device.type,
                   {"teacher": str(path), "teacher_sha256": sha, "distill_weight": float(weight),
                    "teacher_model_args": unet.model_args_of(model)})

    @torch.no_grad()
    def targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(1 - weight) * y + weight * sigmoid(teacher(x)), float32, the shape of y."""
        with torch.autocast(self.device_type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            logits = self.model(x)
        prob = torch.sigmoid(logits.float())
        return (1.0 - self.weight) * y.float() + self.weight * prob
