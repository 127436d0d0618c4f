"""Sentence-level contrastive loss over pooled encoder states (mRASP2, Pan et al., ACL 2021).

    L_ctr = - sum_i log [ exp(sim(R(x_i), R(y_i)) / tau) / sum_j exp(sim(R(x_i), R(y_j)) / tau) ]

R is the average of the encoder states over the real tokens (``common/modeling.py::masked_mean``;
the language token and </s> included, as in the authors' criterion), sim is the cosine similarity, the positive of a source
is its own translation and the negatives are the other translations in the batch. tau = 0.1 and
the weight lambda = 1 are the authors' configs (the criterion's own defaults, 0 and 1, turn the
loss off). Negatives are per process: under DDP each rank contrasts within its own batch, as in
the authors' code ("an approximation", mRASP2 issue #11).
"""
import torch
import torch.nn.functional as F

DEFAULT_TEMPERATURE = 0.1  # mRASP2 configs
DEFAULT_LAMBDA = 1.0


def contrastive_loss(anchors: torch.Tensor, positives: torch.Tensor,
                     temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """L_ctr summed over the batch; ``anchors[i]`` and ``positives[i]`` are a parallel pair."""
    similarity = F.cosine_similarity(anchors.unsqueeze(1), positives.unsqueeze(0), dim=-1)
    targets = torch.arange(anchors.size(0), device=anchors.device)
    return F.cross_entropy(similarity / temperature, targets, reduction="sum")
