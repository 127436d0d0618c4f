"""wav2vec 2.0 without the hub: a small one pre-trained by ``examples/data/pretrain_wav2vec2.sh``
(fairseq-train, audio_pretraining).

Both load through the same code (``tiny_wav2vec2.load_wav2vec2``)::

    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    model = Wav2Vec2Model.build_model(state["cfg"]["model"], task=None)
    model.load_state_dict(state["model"])
"""
import math
import re
import subprocess
import sys

import numpy as np
import torch

import ptnmt_fairseq  # noqa: F401  (weights_only allow-list for fairseq checkpoints)
from conftest import BASE_ENV, REPO, num_updates
from tiny_wav2vec2 import load_wav2vec2, num_frames

SCRIPT = REPO / "examples" / "data" / "pretrain_wav2vec2.sh"
SAMPLE_RATE = 16000


def write_speech_dir(root, n_train=32, n_valid=8, seed=0):
    """Noise plus a few sine tones per clip, 0.6-2.5 s at 16 kHz, in speech-to-text TSVs.

    One training clip is 0.3 s, shorter than the script's MIN_SAMPLE_SIZE: it must be skipped.
    """
    import soundfile

    rng = np.random.default_rng(seed)
    (root / "wav").mkdir(parents=True)
    header = "id\taudio\tn_frames\tsrc_text\ttgt_text\tsrc_lang\ttgt_lang\n"
    for split, n in (("train", n_train), ("valid", n_valid)):
        rows = []
        for i in range(n):
            n_samples = 4800 if (split, i) == ("train", 0) else int(rng.integers(9600, 40000))
            t = np.arange(n_samples) / SAMPLE_RATE
            wav = 0.05 * rng.standard_normal(n_samples)
            for _ in range(3):
                start, stop = sorted(rng.integers(0, n_samples, size=2))
                tone = 0.3 * np.sin(2 * math.pi * rng.uniform(100, 3000) * t)
                wav[start:stop] += tone[start:stop]
            utt = f"{split}_{i:03d}"
            soundfile.write(root / "wav" / f"{utt}.wav", wav.astype(np.float32), SAMPLE_RATE,
                            subtype="PCM_16")
            rows.append(f"{utt}\twav/{utt}.wav\t{n_samples}\tsome text\tdu texte\ten\tfr\n")
        (root / f"{split}.tsv").write_text(header + "".join(rows))
    return root


def test_pretraining_script_end_to_end(tmp_path):
    speech_dir = write_speech_dir(tmp_path / "st")
    outdir = tmp_path / "w2v"
    env = dict(BASE_ENV, PYTHON=sys.executable, MAX_UPDATE="5", EMBED_DIM="32",
               LOG_INTERVAL="1", MAX_TOKENS="160000")
    proc = subprocess.run(["bash", str(SCRIPT), str(speech_dir), str(outdir)],
                          capture_output=True, text=True, env=env, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-8000:]

    manifest = (outdir / "manifest" / "train.tsv").read_text().splitlines()
    assert manifest[0] == str(speech_dir)
    assert manifest[1] == "wav/train_000.wav\t4800"
    assert len(manifest) == 1 + 32
    assert "loaded 31, skipped 1 samples" in output  # the 0.3 s clip
    assert num_updates(output) == 5
    losses = [float(x) for x in re.findall(r"\| train_inner \|.* loss=([-\d.e+]+|nan|inf)", output)]
    assert len(losses) == 5 and all(math.isfinite(x) for x in losses), losses

    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        model = load_wav2vec2(outdir / name)
        assert model.cfg.encoder_embed_dim == 32
        with torch.no_grad():
            out = model.extract_features(torch.randn(1, 20000), None, mask=False)
        assert out["x"].shape == (1, num_frames(20000), 32)
        assert torch.isfinite(out["x"]).all()

