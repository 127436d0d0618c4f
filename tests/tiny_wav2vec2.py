"""A tiny fairseq wav2vec 2.0 checkpoint, created by the tests and loaded through the real code.

The checkpoint has the layout ``fairseq-train --task audio_pretraining --arch wav2vec2`` writes
(see ``examples/data/pretrain_wav2vec2.sh``): ``state["cfg"]`` is the whole ``FairseqConfig``
as a plain container, whose ``model`` node is a ``Wav2Vec2Config`` (plus ``_name: wav2vec2``)
and whose ``task`` node an ``AudioPretrainingConfig``, and ``state["model"]`` is the state dict.
It loads with (``import ptnmt_fairseq`` first: it allow-lists fairseq's pickled globals for
torch's ``weights_only`` loading)::

    from fairseq import checkpoint_utils
    from fairseq.models.wav2vec import Wav2Vec2Model

    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    cfg = state["cfg"]["model"]
    model = Wav2Vec2Model.build_model(cfg, task=None)
    model.load_state_dict(state["model"])

Output length. ``model.extract_features(source, padding_mask, mask=False)`` returns a dict
whose ``"x"`` is B x T x embed_dim and whose ``"padding_mask"`` is B x T (True = padding), or
None when ``padding_mask`` is None or marks nothing. The feature extractor is a stack of
unpadded convolutions ``[(C, 10, 5)] + [(C, 3, 2)] * 4 + [(C, 2, 2)] * 2``, as in the real
wav2vec 2.0, and each layer maps a length L to ``floor((L - kernel) / stride) + 1``
(``Wav2Vec2Model._get_feat_extract_output_lengths``). Composed, that is one window of
``RECEPTIVE_FIELD = 400`` samples (25 ms at 16 kHz) every ``TOTAL_STRIDE = 320`` samples (20 ms):

    T(N) = floor((N - 400) / 320) + 1     for N >= 400 samples (no frame below 400)

e.g. 16000 samples (1 s) -> 49 frames, 8000 -> 24, 48000 -> 149. For a padded batch,
frame t of sample b is padding iff ``t >= T(n_b)`` with n_b the unpadded length. The
transformer neither adds nor drops frames: it pads to ``required_seq_len_multiple`` inside and
removes that again, and ``crop_seq_to_multiple`` is 1.

Padding changes the values, not only the mask: with ``extractor_mode="default"`` (wav2vec 2.0
base) the first conv layer's GroupNorm normalises over the whole padded length, so the real
frames of a padded clip differ from those of the same clip alone (max abs difference ~1.4 on a
trained 64-dim model whose outputs average 0.8). ``extractor_mode="layer_norm"`` (the large
models) normalises per frame instead.
"""
from pathlib import Path

import torch

RECEPTIVE_FIELD = 400
TOTAL_STRIDE = 320

TINY_CONV_LAYERS = "[({c}, 10, 5)] + [({c}, 3, 2)] * 4 + [({c}, 2, 2)] * 2"


def num_frames(num_samples):
    """Frames the tiny (and the real) wav2vec 2.0 feature extractor makes from N samples."""
    if num_samples < RECEPTIVE_FIELD:
        return 0
    return (num_samples - RECEPTIVE_FIELD) // TOTAL_STRIDE + 1


def tiny_wav2vec2_config(embed_dim=32, **overrides):
    """A ``Wav2Vec2Config`` with the sizes of ``examples/data/pretrain_wav2vec2.sh``."""
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config

    fields = dict(
        conv_feature_layers=TINY_CONV_LAYERS.format(c=embed_dim),
        encoder_layers=1,
        encoder_embed_dim=embed_dim,
        encoder_ffn_embed_dim=2 * embed_dim,
        encoder_attention_heads=2,
        conv_pos=16,
        conv_pos_groups=4,
        quantize_targets=True,
        latent_vars=32,
        latent_groups=2,
        final_dim=embed_dim,
        latent_temp=(2.0, 0.5, 0.995),
        dropout_input=0.1,
        dropout_features=0.1,
        feature_grad_mult=0.1,
        mask_length=5,
        mask_prob=0.5,
        num_negatives=10,
    )
    fields.update(overrides)
    return Wav2Vec2Config(**fields)


def _checkpoint_cfg(model_cfg):
    """The ``cfg`` container fairseq-train saves: FairseqConfig with model/task/criterion."""
    from omegaconf import OmegaConf, open_dict

    from fairseq.criterions.wav2vec_criterion import Wav2VecCriterionConfig
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.tasks.audio_pretraining import AudioPretrainingConfig

    cfg = OmegaConf.structured(FairseqConfig)
    cfg.common.cpu = True

    def node(dataclass_obj, name):
        n = OmegaConf.structured(dataclass_obj)
        with open_dict(n):
            n._name = name
        return n

    cfg.model = node(model_cfg, "wav2vec2")
    cfg.task = node(AudioPretrainingConfig(data="", min_sample_size=8000,
                                           max_sample_size=48000), "audio_pretraining")
    cfg.criterion = node(Wav2VecCriterionConfig(
        infonce=True, loss_weights=[0.1, 10.0],
        log_keys=["prob_perplexity", "code_perplexity", "temp"]), "wav2vec")
    # Exactly as Trainer.state_dict(): no OmegaConf objects in the pickle.
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def make_tiny_wav2vec2(path, embed_dim=32, seed=0, **overrides):
    """Save a randomly initialised tiny ``Wav2Vec2Model`` as a fairseq checkpoint at ``path``.

    ``embed_dim`` is the transformer width and the conv channels (so ``extract_features``
    returns ``embed_dim`` features per 20 ms frame); ``overrides`` go to ``Wav2Vec2Config``.
    The global RNG state is left untouched. Returns ``str(path)``.
    """
    from fairseq.checkpoint_utils import torch_persistent_save
    from fairseq.models.wav2vec import Wav2Vec2Model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model_cfg = tiny_wav2vec2_config(embed_dim, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Wav2Vec2Model.build_model(model_cfg, task=None)
    state = {
        "args": None,
        "cfg": _checkpoint_cfg(model_cfg),
        "model": model.state_dict(),
        "criterion": None,
        "optimizer_history": [{
            "criterion_name": "Wav2vecCriterion",
            "optimizer_name": "FairseqAdam",
            "lr_scheduler_state": {},
            "num_updates": 0,
        }],
        "task_state": {},
        "extra_state": {
            "metrics": {},
            "previous_training_time": 0,
            "train_iterator": {"version": 2, "epoch": 1, "iterations_in_epoch": 0,
                               "shuffle": True},
        },
    }
    torch_persistent_save(state, str(path))
    return str(path)


def load_wav2vec2(path):
    """The loading code the docstring shows (model in eval mode)."""
    from fairseq import checkpoint_utils
    from fairseq.models.wav2vec import Wav2Vec2Model

    state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
    cfg = state["cfg"]["model"]
    model = Wav2Vec2Model.build_model(cfg, task=None)
    model.load_state_dict(state["model"])
    return model.eval()
