"""Ranking losses over score matrices (queries x candidates; the positive is candidate 0 of each row), and the one
registry of which model kind trains with which loss, at which default temperature (read by the CLI's options,
hence torch imported only where a loss is computed)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

LOSSES = {  # model kind -> the losses it trains with, its default first
    "cross-encoder": ("ce", "margin-mse", "kl"),
    "bi-encoder": ("contrastive", "margin-mse", "kl"),
}
TEMPERATURES = {"cross-encoder": 1.0, "bi-encoder": 0.05}  # model kind -> default temperature
TEACHER_LOSSES = ("margin-mse", "kl")  # they distil teacher scores, which the training data must carry


def softmax_ce(scores: Tensor) -> Tensor:
    """Localized contrastive estimation: cross-entropy of the positive (column 0) against the row's negatives."""
    import torch
    import torch.nn.functional as F

    return F.cross_entropy(scores.float(), torch.zeros(len(scores), dtype=torch.long, device=scores.device))


def margin_mse(scores: Tensor, teacher: Tensor) -> Tensor:
    """MarginMSE (Hofstätter et al.): the student's positive-negative margins regress the teacher's."""
    import torch.nn.functional as F

    student = scores.float()[:, :1] - scores.float()[:, 1:]
    return F.mse_loss(student, teacher[:, :1] - teacher[:, 1:])


def listwise_kl(scores: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(teacher || student) between the softmax distributions over each row's candidates."""
    import torch.nn.functional as F

    return F.kl_div(F.log_softmax(scores.float() / temperature, dim=-1),
                    F.log_softmax(teacher / temperature, dim=-1), log_target=True, reduction="batchmean")


def in_batch_contrastive(queries: Tensor, docs: Tensor, temperature: float) -> Tensor:
    """InfoNCE with in-batch negatives: each query vector (Q, D) against every passage vector of the batch (Q*G, D),
    G per query with its positive first, similarities divided by ``temperature``."""
    import torch
    import torch.nn.functional as F

    scores = queries @ docs.T / temperature
    group = len(docs) // len(queries)
    return F.cross_entropy(scores, torch.arange(len(queries), device=scores.device) * group)


def ranking_loss(name: str, scores: Tensor, teacher: Tensor | None, temperature: float = 1.0):
    """The loss ``name`` for ``scores`` (Q, G): ``ce``; ``contrastive`` (``ce`` of similarities divided by
    ``temperature``, each query's own candidates only); or a distillation loss of :data:`TEACHER_LOSSES`, which needs
    ``teacher``."""
    if name in ("ce", "contrastive"):
        return softmax_ce(scores if name == "ce" else scores / temperature)
    if name not in TEACHER_LOSSES:
        raise ValueError(f"unknown loss {name!r}")
    if teacher is None:
        raise ValueError(f"the {name} loss needs teacher scores in the training data (see `train score-teacher`)")
    return margin_mse(scores, teacher) if name == "margin-mse" else listwise_kl(scores, teacher, temperature)
