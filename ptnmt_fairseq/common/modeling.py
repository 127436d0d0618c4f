"""Small model helpers shared by every family: padding masks, pooling, parameter counts."""
import logging

import torch

logger = logging.getLogger(__name__)


def padding_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """B x ``max_length`` bool mask, True at padded steps, from B ``lengths``."""
    return torch.arange(max_length, device=lengths.device)[None, :] >= lengths[:, None]


def masked_mean(states: torch.Tensor, padding: torch.Tensor = None) -> torch.Tensor:
    """Sentence embeddings: the mean over time of T x B x C ``states``, ignoring padded steps
    (``padding``: B x T, True = pad; None = no padding). Returns B x C.

    mRASP2's pooling (PANXiao1994/mRASP2, ``label_smoothed_cross_entropy_with_contrastive.py``:
    the mean over non-pad steps), used by its contrastive loss and by sentence retrieval."""
    if padding is None:
        return states.mean(dim=0)
    keep = (~padding).t().unsqueeze(-1).to(states.dtype)  # T x B x 1
    return (states * keep).sum(dim=0) / keep.sum(dim=0).clamp(min=1.0)


def refuse_torch_ddp(model: torch.nn.Module, component: str):
    """Stop when ``model`` is wrapped in torch's DistributedDataParallel (``--ddp-backend
    pytorch_ddp``/``c10d``) while ``component`` calls ``model.encoder``/``model.decoder``
    directly: torch DDP synchronises gradients only for passes through its own ``forward``, so
    each worker would train on its own gradients until fairseq stops with "gradients are
    inconsistent between workers". fairseq's ``legacy_ddp`` all-reduces after the backward pass
    and is what these criteria are tested with."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(getattr(model, "module", None), DistributedDataParallel):
        raise ValueError(f"{component} runs the encoder and the decoder separately, whose "
                         "gradients torch's DistributedDataParallel does not synchronise: "
                         "train with --ddp-backend legacy_ddp")


def count_parameters(model: torch.nn.Module):
    """(trainable, total) number of parameters."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def log_parameter_counts(model: torch.nn.Module, name: str, detail: str = "") -> str:
    """Log and print ``NAME: T trainable parameters of N (P%)``, so a user sees at start what
    is frozen; returns the line."""
    trainable, total = count_parameters(model)
    message = f"{name}: {trainable:,} trainable parameters of {total:,} ({100 * trainable / total:.1f}%)"
    if detail:
        message += f", {detail}"
    logger.info(message)
    print(message, flush=True)
    return message


def report_accuracy(criterion, model, net_output, sample, logging_output):
    """``--report-accuracy`` of fairseq's label-smoothed cross-entropy, for the criterions that
    extend it with their own ``forward``: adds ``n_correct`` and ``total`` to
    ``logging_output`` (the parent's ``reduce_metrics`` turns them into ``accuracy``)."""
    if criterion.report_accuracy:
        n_correct, total = criterion.compute_accuracy(model, net_output, sample)
        logging_output["n_correct"] = int(n_correct)
        logging_output["total"] = int(total)
