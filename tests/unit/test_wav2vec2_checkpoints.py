"""wav2vec 2.0 checkpoints without the hub: the tiny one made in-process (the small one pre-trained
by ``examples/data/pretrain_wav2vec2.sh`` is ``tests/integration/test_wav2vec2_pretraining.py``).

Both load through the same code (``tiny_wav2vec2.load_wav2vec2``)::

    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    model = Wav2Vec2Model.build_model(state["cfg"]["model"], task=None)
    model.load_state_dict(state["model"])
"""
import pytest
import torch

import ptnmt_fairseq  # noqa: F401  (weights_only allow-list for fairseq checkpoints)
from tiny_wav2vec2 import (
    RECEPTIVE_FIELD,
    TOTAL_STRIDE,
    load_wav2vec2,
    make_tiny_wav2vec2,
    num_frames,
)

SAMPLE_RATE = 16000


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return make_tiny_wav2vec2(tmp_path_factory.mktemp("w2v") / "tiny.pt", embed_dim=32)


def test_output_length_formula_matches_fairseq(tiny_checkpoint):
    model = load_wav2vec2(tiny_checkpoint)
    lengths = torch.arange(RECEPTIVE_FIELD, 5 * SAMPLE_RATE, 37)
    expected = torch.tensor([num_frames(int(n)) for n in lengths])
    assert torch.equal(model._get_feat_extract_output_lengths(lengths), expected)
    assert (num_frames(16000), num_frames(8000), num_frames(48000)) == (49, 24, 149)
    assert num_frames(RECEPTIVE_FIELD - 1) == 0 and num_frames(RECEPTIVE_FIELD + TOTAL_STRIDE) == 2


def test_tiny_checkpoint_loads_and_pads(tiny_checkpoint):
    state = torch.load(tiny_checkpoint, weights_only=True)  # plain containers only
    assert state["cfg"]["model"]["_name"] == "wav2vec2"
    assert state["cfg"]["task"]["_name"] == "audio_pretraining"

    model = load_wav2vec2(tiny_checkpoint)
    long_n, short_n = 16000, 8123  # 49 and 25 frames
    long_t, short_t = num_frames(long_n), num_frames(short_n)
    assert (long_t, short_t) == (49, 25)

    gen = torch.Generator().manual_seed(0)
    source = torch.randn(2, long_n, generator=gen)
    source[1, short_n:] = 0
    padding_mask = torch.zeros(2, long_n, dtype=torch.bool)
    padding_mask[1, short_n:] = True

    with torch.no_grad():
        out = model.extract_features(source, padding_mask, mask=False)
        alone = model.extract_features(source[1:, :short_n], None, mask=False)
    assert out["x"].shape == (2, long_t, 32)
    expected_mask = torch.zeros(2, long_t, dtype=torch.bool)
    expected_mask[1, short_t:] = True
    assert torch.equal(out["padding_mask"], expected_mask)
    assert torch.isfinite(out["x"]).all()
    # Unpadded input: no mask comes back, and the frame count is T(N).
    assert alone["padding_mask"] is None
    assert alone["x"].shape == (1, short_t, 32)

