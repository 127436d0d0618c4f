"""Regression tests for ``ptnmt_fairseq/common/compat.py``, in process: each fails without its
fix (the CLI-level ones are in ``tests/integration/test_compat_cli.py``)."""
import math
import os
import pickle
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

import ptnmt_fairseq  # noqa: F401  (applies the fixes, as --user-dir does)
from ptnmt_fairseq.common import compat
from conftest import BASE_ENV

def test_apply_is_idempotent():
    assert compat.apply() == []  # already applied by the import above
    assert {p.patch_name for p in compat.PATCHES} <= compat._APPLIED


def test_no_env_var_escape_hatch_is_set():
    # The fix must not rely on the user exporting TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.
    assert not any(k.startswith("TORCH_FORCE_") for k in BASE_ENV)


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


def test_batch_by_size_keeps_every_sentence():
    from fairseq.data import data_utils

    indices = np.arange(10, dtype=np.int64)
    batches = data_utils.batch_by_size(indices, lambda i: 5, max_tokens=500,
                                       required_batch_size_multiple=8)
    assert [b.tolist() for b in batches] == [list(range(8)), [8, 9]]


@pytest.mark.parametrize("options", [dict(no_overlap=True, min_space=1),
                                     dict(mask_type="uniform", mask_other=2)])
def test_wav2vec2_mask_options_that_called_generator_randint(options):
    from fairseq.data.data_utils import compute_mask_indices

    mask = compute_mask_indices((4, 100), None, 0.5, 5, min_masks=1, **options)
    assert mask.shape == (4, 100) and mask.any(axis=1).all()



def test_numpy2_bucketing_and_eos_blocks():
    from fairseq.data import Dictionary, LanguagePairDataset, TokenBlockDataset, data_utils

    # get_buckets: np.percentile(interpolation="lower") -> the lower of each bucket's sizes
    assert data_utils.get_buckets(np.array([3, 2, 4, 5, 9]), 2).tolist() == [4, 9]
    # TokenBlockDataset(break_mode="eos"): np.compat.long
    blocks = TokenBlockDataset([torch.LongTensor([4, 5, 2]), torch.LongTensor([6, 2])], [3, 2],
                               block_size=None, pad=1, eos=2, break_mode="eos")
    assert [blocks[i].tolist() for i in range(len(blocks))] == [[4, 5, 2], [6, 2]]
    # LanguagePairDataset(num_buckets=...): get_buckets, then np.vectorize(otypes=[np.compat.long])
    d = Dictionary()
    sentences = [torch.LongTensor([d.add_symbol(str(i))] * (i + 1) + [d.eos()]) for i in range(6)]
    sizes = np.array([len(s) for s in sentences])
    pairs = LanguagePairDataset(sentences, sizes, d, sentences, sizes, d, num_buckets=2)
    assert pairs.buckets is not None and pairs.collater([pairs[0], pairs[5]])["nsentences"] == 2


def test_legacy_masked_lm_dictionaries_load(tmp_path):
    from fairseq.data.legacy.masked_lm_dictionary import BertDictionary, MaskedLMDictionary

    path = tmp_path / "dict.txt"
    path.write_text("hello 3\nworld 2\n")
    xlm = MaskedLMDictionary.load(str(path))
    assert xlm.symbols[:7] == ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "hello", "world"]
    assert xlm.mask() == 4 and xlm.nspecial == 5
    bert = BertDictionary.load(str(path))
    assert bert.symbols[5:9] == ["<cls>", "<sep>", "hello", "world"] and bert.nspecial == 7


def _binarised(prefix, suffix):
    return prefix.parent / (prefix.name + suffix)


@pytest.mark.parametrize("damage,named,problem", [
    (lambda p: _binarised(p, ".bin").write_bytes(b""), ".bin", "0 bytes, but its index"),
    (lambda p: _binarised(p, ".bin").write_bytes(b"123456789"), ".bin", "9 bytes, but its index"),
    (lambda p: _binarised(p, ".idx").write_bytes(b"MMIDIDX"), ".idx", "shorter than the index"),
    (lambda p: _binarised(p, ".idx").write_bytes(b"X" * 64), ".idx", "not a fairseq mmap index"),
])
def test_damaged_binarised_file_is_named(tmp_path, damage, named, problem):
    from fairseq.data import indexed_dataset

    prefix = tmp_path / "valid.src-tgt.src"
    builder = indexed_dataset.MMapIndexedDatasetBuilder(str(prefix) + ".bin", dtype=np.int32)
    for tokens in ([5, 6, 2], [7, 2]):
        builder.add_item(torch.IntTensor(tokens))
    builder.finalize(str(prefix) + ".idx")
    assert indexed_dataset.MMapIndexedDataset(str(prefix))[1].tolist() == [7, 2]
    damage(prefix)
    with pytest.raises(ValueError, match=rf"valid.src-tgt.src\{named}: .*{problem}.*fairseq-preprocess"):
        indexed_dataset.MMapIndexedDataset(str(prefix))


@pytest.mark.parametrize("skip", [False, True])
def test_sentences_longer_than_max_tokens_are_named_or_skipped(tiny_data, skip):
    from conftest import PLUGIN, build_task

    _, task = build_task([tiny_data, "--user-dir", PLUGIN, "--task", "translation",
                          "--arch", "transformer", "--cpu"])
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    lengths = dataset.num_tokens_vec(np.arange(len(dataset)))
    max_tokens = int(np.sort(lengths)[len(lengths) // 2])  # half the sentences are longer

    def batches():
        iterator = task.get_batch_iterator(dataset, max_tokens=max_tokens,
                                           max_positions=(1024, 1024), ignore_invalid_inputs=skip)
        return [b for b in iterator.next_epoch_itr(shuffle=False) if b]

    if not skip:
        with pytest.raises(ValueError, match=rf"valid: sentence \d+ has \d+ tokens, more than "
                                             rf"--max-tokens {max_tokens}: pass --skip-invalid"):
            batches()
        return
    kept = sorted(int(i) for b in batches() for i in b["id"])
    assert kept == [i for i in range(len(dataset)) if lengths[i] <= max_tokens]


def test_max_tokens_check_reads_wrapped_datasets(tiny_data):
    """fairseq's BaseWrapperDataset has no num_tokens_vec (its base raises
    NotImplementedError): the check falls back to num_tokens, as fairseq's batching does."""
    from fairseq.data import BaseWrapperDataset

    from conftest import PLUGIN, build_task

    _, task = build_task([tiny_data, "--user-dir", PLUGIN, "--task", "translation",
                          "--arch", "transformer", "--cpu"])
    task.load_dataset("valid")
    wrapped = BaseWrapperDataset(task.dataset("valid"))
    iterator = task.get_batch_iterator(wrapped, max_tokens=4000, max_positions=(1024, 1024))
    assert sum(len(b["id"]) for b in iterator.next_epoch_itr(shuffle=False)) == len(wrapped)
    with pytest.raises(ValueError, match="more than --max-tokens 3"):  # a new dataset: fairseq
        task.get_batch_iterator(BaseWrapperDataset(task.dataset("valid")),  # caches iterators
                                max_tokens=3, max_positions=(1024, 1024))
