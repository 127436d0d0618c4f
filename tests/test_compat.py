"""Regression tests for ``ptnmt_fairseq/common/compat.py``: each fails without its fix."""
import io
import math
import os
import pickle
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch

import ptnmt_fairseq  # noqa: F401  (applies the fixes, as --user-dir does)
from ptnmt_fairseq.common import compat
from conftest import (
    BASE_ENV, PLUGIN, cli, free_port, generate, hypotheses, num_updates, run_cli, train,
    train_args,
)

EVAL_BLEU = [
    "--task", "translation", "--eval-bleu", "--eval-bleu-args", '{"beam": 1}',
    "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric",
]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A checkpoint written by fairseq-train with --eval-bleu (numpy counts in its meters)."""
    save_dir = tmp_path_factory.mktemp("ckpt")
    train(tiny_data, save_dir, extra=EVAL_BLEU)
    return save_dir


def test_apply_is_idempotent():
    assert compat.apply() == []  # already applied by the import above
    assert {p.patch_name for p in compat.PATCHES} <= compat._APPLIED


def test_no_env_var_escape_hatch_is_set():
    # The fix must not rely on the user exporting TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.
    assert not any(k.startswith("TORCH_FORCE_") for k in BASE_ENV)


def test_checkpoint_needs_the_allow_list(trained):
    # Without the plugin, plain torch 2.9 refuses the checkpoint: this is the bug we fix.
    proc = subprocess.run(
        [sys.executable, "-c",
         "import torch, sys; torch.load(sys.argv[1], map_location='cpu')",
         str(trained / "checkpoint_last.pt")],
        capture_output=True, text=True, env=BASE_ENV,
    )
    assert proc.returncode != 0 and "Unsupported global" in proc.stderr


def test_generate_loads_fairseq_checkpoint(tiny_data, trained):
    out = generate(tiny_data, trained / "checkpoint_last.pt")
    assert len(hypotheses(out.stdout)) == 10  # every test sentence decoded


def test_generate_loads_best_checkpoint_with_bleu_meters(tiny_data, trained):
    state = torch.load(trained / "checkpoint_best.pt", map_location="cpu")  # weights_only=True
    assert "bleu" in str(state["extra_state"]["metrics"]) or state["extra_state"]["best"]
    out = generate(tiny_data, trained / "checkpoint_best.pt")
    assert len(hypotheses(out.stdout)) == 10


def test_interactive_loads_checkpoint(tiny_data, trained):
    proc = subprocess.run(
        [cli("fairseq-interactive"), str(tiny_data), "--user-dir", PLUGIN, "--cpu",
         "--path", str(trained / "checkpoint_last.pt"), "--beam", "2",
         "--source-lang", "src", "--target-lang", "tgt"],
        input="a b c\n", capture_output=True, text=True, env=BASE_ENV, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any(line.startswith("H-0\t") for line in proc.stdout.splitlines())


def test_restore_file_resumes_training(tiny_data, trained, tmp_path):
    shutil.copy(trained / "checkpoint_last.pt", tmp_path / "checkpoint_last.pt")
    out = train(tiny_data, tmp_path, extra=EVAL_BLEU + ["--max-update", "5"])
    log = out.stdout + out.stderr
    assert "Loaded checkpoint" in log and "@ 3 updates" in log
    assert num_updates(log) == 5


def _rename_pickle_globals(src, dst, old, new):
    """Rewrite the pickle inside a torch zip checkpoint, renaming a module in its globals."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                assert old in data
                data = data.replace(old, new)
            zout.writestr(item, data)


def test_numpy1_checkpoint_names_load(trained, tmp_path):
    # numpy<2 pickles numpy.core.multiarray._reconstruct; numpy 2 writes numpy._core.
    legacy = tmp_path / "legacy.pt"
    torch.save({"counts": np.arange(4, dtype=np.int64)}, tmp_path / "new.pt")
    _rename_pickle_globals(tmp_path / "new.pt", legacy, b"numpy._core.multiarray",
                           b"numpy.core.multiarray")
    state = torch.load(legacy, map_location="cpu")
    assert state["counts"].tolist() == [0, 1, 2, 3]


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_allow_list_still_rejects_arbitrary_callables(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": _Exploit()}, path)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        torch.load(path, map_location="cpu")


def _tone(sample_rate, freq=440.0, seconds=0.5):
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    return (0.5 * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def test_get_waveform_resamples_without_sox(tmp_path):
    from fairseq.data.audio.audio_utils import get_waveform

    path = tmp_path / "tone.wav"
    sf.write(path, _tone(22050), 22050, subtype="PCM_16")
    wav, sr = get_waveform(str(path), output_sample_rate=16000)
    assert sr == 16000 and wav.shape == (1, 8000)
    spectrum = np.abs(np.fft.rfft(wav[0]))
    peak_hz = np.argmax(spectrum) * 16000 / wav.shape[1]
    assert abs(peak_hz - 440.0) <= 2.0  # the tone survives resampling at its pitch


def test_convert_waveform_mono_and_normalise():
    stereo = np.stack([_tone(16000), 0.5 * _tone(16000)])
    mono, sr = compat.convert_waveform(stereo, 16000, to_mono=True, normalize_volume=True)
    assert sr == 16000 and mono.shape == (1, 8000)
    assert np.isclose(np.abs(mono).max(), 1.0, atol=1e-4)


def test_numpy_aliases_for_dynamic_crf():
    # fairseq.modules.DynamicCRF (the NAT CRF of nacrf_transformer) calls np.float("inf").
    from fairseq.modules import DynamicCRF

    torch.manual_seed(0)
    crf = DynamicCRF(num_embedding=6, low_rank=2, beam_size=3)
    emissions = torch.randn(2, 4, 6)
    targets = torch.randint(0, 6, (2, 4))
    loglik = crf(emissions, targets, torch.ones(2, 4, dtype=torch.bool))
    assert loglik.shape == (2,) and torch.all(loglik <= 0)


def test_checkpoint_copy_is_atomic(tmp_path, monkeypatch):
    from fairseq.file_io import PathManager

    src, dst = tmp_path / "checkpoint1.pt", tmp_path / "checkpoint_last.pt"
    src.write_bytes(b"new" * 1000)
    dst.write_bytes(b"old checkpoint")
    real_copyfile = shutil.copyfile

    def killed_midway(a, b, *args, **kwargs):
        with open(b, "wb") as f:
            f.write(b"ne")  # a partial write, then the job is killed
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copyfile", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        PathManager.copy(str(src), str(dst), overwrite=True)
    assert dst.read_bytes() == b"old checkpoint"
    assert list(tmp_path.iterdir()) == [src, dst] or set(tmp_path.iterdir()) == {src, dst}
    monkeypatch.setattr(shutil, "copyfile", real_copyfile)
    PathManager.copy(str(src), str(dst), overwrite=True)
    assert dst.read_bytes() == src.read_bytes()


def test_torchrun_on_cpu_trains_two_ranks(tiny_data, tmp_path):
    args = train_args(tiny_data, tmp_path, extra=["--distributed-backend", "gloo",
                                                  "--ddp-backend", "legacy_ddp"])
    proc = subprocess.run(
        [cli("torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()),
         cli("fairseq-train")] + [str(a) for a in args],
        capture_output=True, text=True, env=BASE_ENV, timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "ZeroDivisionError" not in log
    assert "distributed init (rank 1)" in log  # two ranks, not two separate jobs
    assert num_updates(log) == 3  # a silent no-op exit 0 would log no updates


def test_explicit_init_without_no_spawn_fails_loudly(tiny_data, tmp_path):
    args = train_args(tiny_data, tmp_path, extra=[
        "--distributed-world-size", "2", "--distributed-backend", "gloo",
        "--distributed-init-method", f"tcp://127.0.0.1:{free_port()}",
    ])
    proc = run_cli("fairseq-train", args, check=False)
    assert proc.returncode != 0
    assert "would spawn 0 workers" in proc.stderr and "--distributed-no-spawn" in proc.stderr


def test_batch_by_size_keeps_every_sentence():
    from fairseq.data import data_utils

    indices = np.arange(10, dtype=np.int64)
    batches = data_utils.batch_by_size(indices, lambda i: 5, max_tokens=500,
                                       required_batch_size_multiple=8)
    assert [b.tolist() for b in batches] == [list(range(8)), [8, 9]]


def test_generate_translates_every_test_sentence(tiny_data, trained):
    # 10 test sentences with the default --required-batch-size-multiple 8: all 10 are scored.
    out = generate(tiny_data, trained / "checkpoint_last.pt")
    assert sorted(hypotheses(out.stdout)) == list(range(10))


@pytest.mark.parametrize("options", [dict(no_overlap=True, min_space=1),
                                     dict(mask_type="uniform", mask_other=2)])
def test_wav2vec2_mask_options_that_called_generator_randint(options):
    from fairseq.data.data_utils import compute_mask_indices

    mask = compute_mask_indices((4, 100), None, 0.5, 5, min_masks=1, **options)
    assert mask.shape == (4, 100) and mask.any(axis=1).all()
