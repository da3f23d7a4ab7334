"""Knowledge distillation for the recovery fine-tune after pruning.

A pruned model relearns faster from its unpruned self than from the hard labels alone: the
teacher's soft distribution over labels says which mistakes are near misses (Hinton et al.
2015; Sanh et al. 2020 use it to recover pruned BERTs). The loss mixes the task's
cross-entropy with the temperature-scaled KL divergence to the teacher at every labelled
position, so one module serves sequence and token tasks alike.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from emergent.models.classifier import TaskModule
from emergent.tasks.shapes import model_inputs


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2-scaled KL(teacher || student) over the positions that carry a label (not -100).

    `student` and `teacher` are logits shaped `labels.shape + (num_labels,)`: (batch, labels)
    for sequence tasks, (batch, tokens, labels) for token tasks.
    """
    keep = labels.ne(-100)
    s = student[keep].float() / temperature
    t = teacher[keep].float() / temperature
    if s.numel() == 0:
        return student.sum() * 0.0
    kl = F.kl_div(
        F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean"
    )
    return kl * temperature**2


class DistilledTaskModule(TaskModule):
    """The fine-tuning module with `alpha * KD + (1 - alpha) * cross-entropy` as training loss.

    The teacher is kept out of the module's children (a plain attribute holding a tuple) so
    Lightning neither switches it to train mode, nor moves it into checkpoints, nor hands its
    parameters to the optimizer.
    """

    def __init__(
        self, *args: Any, teacher: Any, alpha: float, temperature: float, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._teacher = (teacher.eval().requires_grad_(False),)
        self.alpha = float(alpha)
        self.temperature = float(temperature)

    def training_loss(
        self, batch: dict[str, torch.Tensor], logits: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            teacher = self._teacher[0]
            target = teacher(**model_inputs(teacher.config, batch)).logits
        hard = self.loss(logits, batch["labels"])
        soft = distillation_loss(logits, target, batch["labels"], self.temperature)
        return self.alpha * soft + (1.0 - self.alpha) * hard, {"train_kd": soft}
