"""Checkpoint averaging with the semantics of fairseq's ``scripts/average_checkpoints.py``
(which the installed wheel does not ship): the element-wise mean of the ``model`` tensors of N
checkpoints, every other entry (cfg, optimizer state, extra state) from the first input.

The papers of this suite decode from an average of the last checkpoints (AB-Net and XSTNet: 10,
mRASP: the top 5). Checkpoints are read with fairseq's ``load_checkpoint_to_cpu``, so under the
same weights-only allow-list as training and generation (compat fix 1): a pickle that calls a
function is refused. Checkpoints of different models are refused with an error that names both
files and the difference, rather than averaged into a meaningless model.
"""
import os
import re
from pathlib import Path


EPOCH_CHECKPOINT = re.compile(r"checkpoint(\d+)\.pt")  # checkpoint12.pt: epoch 12
UPDATE_CHECKPOINT = re.compile(r"checkpoint_\d+_(\d+)\.pt")  # checkpoint_3_5000.pt: update 5000


class CheckpointMismatch(ValueError):
    """Two checkpoints that are not of one model (architecture, parameter names or shapes)."""


def last_checkpoints(folder, n: int, update_based: bool = False, upper_bound=None):
    """The paths of the ``n`` newest epoch checkpoints (``checkpointE.pt``) of ``folder``, or
    with ``update_based`` the newest update checkpoints (``checkpoint_E_U.pt``), newest first;
    ``upper_bound``: ignore those past this epoch (update). ValueError when fewer than ``n``
    exist, naming the folder and the pattern."""
    pattern = UPDATE_CHECKPOINT if update_based else EPOCH_CHECKPOINT
    found = []
    for name in os.listdir(folder):
        match = pattern.fullmatch(name)
        if match and (upper_bound is None or int(match.group(1)) <= upper_bound):
            found.append((int(match.group(1)), name))
    if len(found) < n:
        kind = "checkpoint_E_U.pt (--save-interval-updates)" if update_based else \
            "checkpointE.pt (one per epoch; not --no-epoch-checkpoints)"
        bound = f" up to {upper_bound}" if upper_bound is not None else ""
        raise ValueError(f"{folder}: {len(found)} checkpoints named {kind}{bound}, need {n}")
    return [str(Path(folder) / name) for _, name in sorted(found, reverse=True)[:n]]


def model_name(state) -> str:
    """The architecture a fairseq checkpoint was trained with (``cfg.model._name``/``arch``)."""
    model_cfg = state["cfg"].get("model") if state.get("cfg") is not None else None
    if model_cfg is None and state.get("args") is not None:  # a pre-hydra checkpoint
        model_cfg = vars(state["args"])
    if model_cfg is None:
        return "?"
    get = model_cfg.get if hasattr(model_cfg, "get") else lambda k: getattr(model_cfg, k, None)
    return str(get("arch") or get("_name") or "?")


def check_same_model(first_path, first, path, state):
    """CheckpointMismatch unless ``state`` (read from ``path``) is of the model of ``first``."""
    names = (model_name(first), model_name(state))
    if names[0] != names[1]:
        raise CheckpointMismatch(f"{path} is a {names[1]!r} checkpoint but {first_path} is a "
                                 f"{names[0]!r} one: only checkpoints of one model average")
    ours, theirs = first["model"], state["model"]
    if list(ours) != list(theirs):
        only_a = sorted(set(ours) - set(theirs))[:3]
        only_b = sorted(set(theirs) - set(ours))[:3]
        raise CheckpointMismatch(f"{path} and {first_path} hold different parameters (only in "
                                 f"{first_path}: {only_a}; only in {path}: {only_b})")
    for key, tensor in ours.items():
        if tensor.shape != theirs[key].shape:
            raise CheckpointMismatch(f"parameter {key} has shape {tuple(theirs[key].shape)} in "
                                     f"{path} but {tuple(tensor.shape)} in {first_path}")


def average_checkpoints(paths):
    """The first checkpoint of ``paths`` with its ``model`` tensors replaced by the element-wise
    mean over all of them (fairseq's ``average_checkpoints``). Floating tensors are summed in
    float64 and returned in their own dtype; integer buffers (e.g. a step counter) are
    integer-divided, as fairseq does. CheckpointMismatch for checkpoints of different models."""
    from fairseq.checkpoint_utils import load_checkpoint_to_cpu

    if not paths:
        raise ValueError("no checkpoints to average")
    first, sums = None, {}
    for path in paths:
        state = load_checkpoint_to_cpu(str(path))
        if first is None:
            first, first_path = state, path
        else:
            check_same_model(first_path, first, path, state)
        for key, tensor in state["model"].items():
            value = tensor.double() if tensor.is_floating_point() else tensor.clone()
            sums[key] = value if key not in sums else sums[key] + value
    averaged = {}
    for key, total in sums.items():
        dtype = first["model"][key].dtype
        averaged[key] = (total / len(paths)).to(dtype) if total.is_floating_point() \
            else total // len(paths)
    first["model"] = averaged
    return first


def save_checkpoint_atomically(state, output):
    """Save ``state`` to ``output`` with fairseq's own ``torch_persistent_save`` (a temporary
    file and a rename, as fairseq-train writes its checkpoints), so a killed run never leaves a
    truncated checkpoint; the cfg is stored as plain containers, as fairseq-train stores it, so
    the weights-only loader reads it back."""
    from fairseq.checkpoint_utils import torch_persistent_save
    from omegaconf import OmegaConf

    if OmegaConf.is_config(state.get("cfg")):
        state = dict(state, cfg=OmegaConf.to_container(state["cfg"], resolve=True,
                                                       enum_to_str=True))
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    torch_persistent_save(state, str(output))


def warm_start_strictly(model, path, is_new, option="--warm-start-nmt"):
    """Load the ``model`` tensors of the fairseq checkpoint ``path`` into ``model``, strictly:
    every tensor of the checkpoint must exist in ``model`` with its shape, and every tensor of
    ``model`` must come from the checkpoint unless ``is_new(name)`` (the modules the warm start
    adds). A ValueError names the first offending tensors; nothing is loaded then.

    Why: bert-nmt/bert-nmt warm-starts BERT-fused with ``strict=False`` (its
    ``--warmup-from-nmt``), so a checkpoint of another model loads nothing and training silently
    starts from scratch (users report 23 BLEU instead of 34).
    """
    from fairseq import checkpoint_utils

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{option} {path}: no such checkpoint")
    state = checkpoint_utils.load_checkpoint_to_cpu(path)["model"]
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    missing = sorted(k for k in own if k not in state and not is_new(k))
    mismatched = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                        for k in state if k in own and state[k].shape != own[k].shape)
    problems = [(what, names) for what, names in (
        ("tensors the model lacks", unexpected), ("model tensors it lacks", missing),
        ("shapes that differ", mismatched)) if names]
    if problems:
        detail = "; ".join(f"{len(names)} {what}: {', '.join(names[:3])}"
                           + (" ..." if len(names) > 3 else "") for what, names in problems)
        raise ValueError(f"{option} {path} does not match this model: {detail}")
    merged = {k: state.get(k, v) for k, v in own.items()}
    model.load_state_dict(merged, strict=True)
    return sorted(k for k in own if k not in state)
