"""Distillation from a teacher's logits while training on the data (Minitron, Arcee DistillKit): the loss is
(1 - kl_weight) * cross-entropy + kl_weight * T^2 * KL(teacher_T || student_T) over the tokens the labels score, T the
temperature. trl's own DistillationTrainer distils on completions it generates; healing an up-scale distils on the
training text itself, so this is SFTTrainer with that loss and nothing else changed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from trl import SFTTrainer

INPUTS = ("input_ids", "attention_mask", "position_ids")


class DistillTrainer(SFTTrainer):
    def __init__(self, *args, teacher, kl_weight: float, temperature: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.eval().requires_grad_(False)
        self.kl_weight, self.temperature = kl_weight, temperature

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        forward = {k: inputs[k] for k in INPUTS if k in inputs}
        logits = model(**forward, use_cache=False).logits[:, :-1]
        with torch.no_grad():
            teacher = self.teacher(**forward, use_cache=False).logits[:, :-1]
        target = inputs["labels"][:, 1:]
        mask = target != -100
        count = mask.sum() if num_items_in_batch is None else num_items_in_batch
        count = torch.as_tensor(count, device=logits.device).clamp(min=1)
        student, teacher, target = logits[mask].float(), teacher[mask].float(), target[mask]
        ce = F.cross_entropy(student, target, reduction="sum") / count
        t = self.temperature
        log_teacher = F.log_softmax(teacher / t, dim=-1)
        kl = (log_teacher.exp() * (log_teacher - F.log_softmax(student / t, dim=-1))).sum() * t * t / count
        loss = (1 - self.kl_weight) * ce + self.kl_weight * kl
        mode = "train" if model.training else "eval"
        scale = count.item() / max(mask.sum().item(), 1)  # per-token values, whatever the accumulation
        self._metrics[mode]["ce"].append(ce.item() * scale)
        self._metrics[mode]["kl"].append(kl.item() * scale)
        return (loss, None) if return_outputs else loss
