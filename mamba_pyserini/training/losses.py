"""Ranking losses over score matrices (queries x candidates); the positive is candidate 0 of each row."""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("ce", "margin-mse", "kl")


def softmax_ce(scores: torch.Tensor) -> torch.Tensor:
    """Localized contrastive estimation: cross-entropy of the positive (column 0) against the row's negatives."""
    return F.cross_entropy(scores.float(), torch.zeros(len(scores), dtype=torch.long, device=scores.device))


def margin_mse(scores: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MarginMSE (Hofstätter et al.): the student's positive-negative margins regress the teacher's."""
    student = scores.float()[:, :1] - scores.float()[:, 1:]
    return F.mse_loss(student, teacher[:, :1] - teacher[:, 1:])


def listwise_kl(scores: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) between the softmax distributions over each row's candidates."""
    return F.kl_div(F.log_softmax(scores.float() / temperature, dim=-1),
                    F.log_softmax(teacher / temperature, dim=-1), log_target=True, reduction="batchmean")


def ranking_loss(name: str, scores: torch.Tensor, teacher: torch.Tensor | None, temperature: float = 1.0):
    """The loss ``name`` (one of :data:`LOSSES`) for ``scores`` (Q, G); distillation losses need ``teacher``."""
    if name == "ce":
        return softmax_ce(scores)
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    if teacher is None:
        raise ValueError(f"the {name} loss needs teacher scores in the training data (see `train score-teacher`)")
    return margin_mse(scores, teacher) if name == "margin-mse" else listwise_kl(scores, teacher, temperature)
