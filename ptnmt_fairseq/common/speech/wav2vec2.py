"""wav2vec 2.0 as the acoustic encoder of the speech methods (XSTNet, Chimera).

fairseq's own ``Wav2Vec2Model`` is loaded from a fairseq checkpoint; its config is stored in the
method's checkpoint (``args.w2v_config``), so generation needs no ``--w2v-path``.
"""
from contextlib import nullcontext

import torch
from fairseq import checkpoint_utils
from fairseq.models.wav2vec import Wav2Vec2Config, Wav2Vec2Model
from omegaconf import OmegaConf

from ptnmt_fairseq.common.modeling import padding_mask

FINE_TUNED_KINDS = ("wav2vec_ctc", "wav2vec_seq2seq")


def load_wav2vec2(path):
    """fairseq's ``Wav2Vec2Model`` and its config (a dict) from a wav2vec 2.0 checkpoint.

    Takes a self-supervised checkpoint (``wav2vec_small.pt``, or one written by fairseq's
    ``audio_pretraining`` task) or a CTC fine-tuned one (``wav2vec_small_960h.pt``, whose encoder
    sits under ``w2v_encoder.w2v_model.``). The config comes from ``cfg.model``, never from the old
    ``args`` Namespace, which lacks fields fairseq 0.12 needs.

    Raises FileNotFoundError (no such file) or ValueError (not wav2vec 2.0, missing weights),
    naming ``--w2v-path``.
    """
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(path)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"--w2v-path {path}: no such wav2vec 2.0 checkpoint") from error
    model_cfg = state["cfg"]["model"]
    weights, prefix = state["model"], ""
    if model_cfg.get("_name") in FINE_TUNED_KINDS:
        model_cfg, prefix = model_cfg["w2v_args"]["model"], "w2v_encoder.w2v_model."
    if model_cfg.get("_name") not in ("wav2vec2", None):
        raise ValueError(f"--w2v-path {path}: a {model_cfg.get('_name')!r} checkpoint, "
                         "not wav2vec 2.0")
    config = OmegaConf.to_container(model_cfg, resolve=True)
    model = build_wav2vec2(config)
    weights = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    missing, _unexpected = model.load_state_dict(weights, strict=False)
    if missing:
        raise ValueError(f"--w2v-path {path}: the checkpoint lacks {missing[:5]} ...")
    return model, config


def build_wav2vec2(config: dict) -> Wav2Vec2Model:
    """A randomly initialised ``Wav2Vec2Model`` of ``config`` (weights come later)."""
    known = {k: v for k, v in config.items() if k in Wav2Vec2Config.__dataclass_fields__}
    model = Wav2Vec2Model.build_model(Wav2Vec2Config(**known), task=None)
    # Fine-tuning never uses the quantiser or the contrastive projections; removing them keeps
    # DDP from waiting for gradients that never come.
    model.remove_pretraining_modules()
    return model


def wav2vec2_from_args(args, method: str):
    """The model's wav2vec 2.0: rebuilt from ``args.w2v_config`` when the model comes from one of
    our checkpoints (its weights follow), else loaded from ``--w2v-path``. Records the config in
    ``args`` so that it is saved with the model."""
    if getattr(args, "w2v_config", None):
        wav2vec2 = build_wav2vec2(args.w2v_config)
    elif getattr(args, "w2v_path", None):
        wav2vec2, args.w2v_config = load_wav2vec2(args.w2v_path)
    else:
        raise ValueError(f"{method} needs --w2v-path, a fairseq wav2vec 2.0 checkpoint")
    return wav2vec2


def wav2vec2_frames(wav2vec2: Wav2Vec2Model, waveform, lengths, frozen: bool):
    """B x samples waveforms (``lengths``: B) -> (B x frames x C, frame lengths: B), 20 ms frames.

    fairseq returns ``padding_mask`` None when nothing in the batch is padded; the frame lengths
    are then all the full length."""
    pad_mask = padding_mask(lengths, waveform.size(1))
    with torch.no_grad() if frozen else nullcontext():
        out = wav2vec2.extract_features(waveform, pad_mask if pad_mask.any() else None, mask=False)
    frames = out["x"]
    if out["padding_mask"] is None:
        return frames, lengths.new_full(lengths.shape, frames.size(1))
    return frames, (~out["padding_mask"]).sum(1)
