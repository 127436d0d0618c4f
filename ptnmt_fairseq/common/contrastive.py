"""The InfoNCE contrastive loss of the methods that pull two views of one meaning together.

    L_ctr = - sum_i log [ exp(sim(a_i, p_i) / tau) / sum_j exp(sim(a_i, p_j) / tau) ]

sim is the cosine similarity; the positive of anchor a_i is p_i, the negatives are the other
p_j of its group. The softmax runs over the positives p_j, once per anchor.

- mRASP2 (Pan et al., ACL 2021): one group, the batch; a_i and p_i are the mean-pooled encoder
  states of a sentence and of its translation (``common/modeling.py::masked_mean``, the language
  token and </s> included, as in the authors' criterion). tau = 0.1 and lambda = 1 are the
  authors' configs (the criterion's own defaults, 0 and 1, turn the loss off). Negatives are per
  process: under DDP each rank contrasts within its own batch, as in the authors' code ("an
  approximation", mRASP2 issue #11).
- Chimera (Han et al., Findings of ACL 2021): one group per sentence; a_i is text memory slot i
  and p_j the speech memory slot j of the same sentence, tau = 0.1 (Glaciohound/Chimera-ST,
  ``criterions/triplet_st_mt_contrastive.py``).
"""
import torch
import torch.nn.functional as F

DEFAULT_TEMPERATURE = 0.1  # mRASP2 configs, Chimera-ST scripts
DEFAULT_LAMBDA = 1.0


def contrastive_loss(anchors: torch.Tensor, positives: torch.Tensor,
                     temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """L_ctr summed over anchors and groups: ``anchors`` and ``positives`` are (..., N, d), the
    leading dimensions indexing groups; ``anchors[..., i, :]`` and ``positives[..., i, :]`` are a
    pair. Computed in float32 at least (cosines of half-precision vectors are too coarse at
    tau = 0.1)."""
    dtype = torch.promote_types(torch.promote_types(anchors.dtype, positives.dtype), torch.float32)
    anchors = F.normalize(anchors.to(dtype), dim=-1, eps=1e-8)
    positives = F.normalize(positives.to(dtype), dim=-1, eps=1e-8)
    similarity = anchors @ positives.transpose(-1, -2)  # (..., N anchors, N positives)
    n = similarity.size(-1)
    targets = torch.arange(n, device=similarity.device).expand(similarity.shape[:-1])
    return F.cross_entropy(similarity.reshape(-1, n) / temperature, targets.reshape(-1),
                           reduction="sum")
