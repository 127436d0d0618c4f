"""The one place that knows the version quirks of fairseq 0.12 on Python 3.11 / torch 2.9.

``apply()`` is called once by ``ptnmt_fairseq/__init__.py`` (that is, when fairseq imports
``--user-dir ptnmt_fairseq``). Every fix is idempotent, logged once, and has a regression test
in ``tests/unit/test_compat.py`` or ``tests/integration/test_compat_cli.py`` that fails without it.

Fixes
-----
1. ``weights_only`` (torch >= 2.6 loads with ``weights_only=True``): fairseq checkpoints pickle
   ``argparse.Namespace``, omegaconf containers, numpy scalars/arrays (BLEU meters) and, during a
   distributed resume, ``fairseq.distributed.utils._TensorPlaceholder``. We *allow-list exactly
   these globals* instead of turning ``weights_only`` off, so a pickle that smuggles in
   ``os.system`` or any other callable is still refused. Trust model: see README.
2. torchaudio 2.9 has no ``sox_effects``; fairseq's ``convert_waveform`` imports it for every
   raw-audio read. We resample with ``torchaudio.functional.resample`` instead.
3. ``torchrun`` on CPU: fairseq computes ``rank % torch.cuda.device_count()`` (ZeroDivisionError)
   and, because the default world size is the GPU count, ignores ``WORLD_SIZE``.
4. An explicit ``--distributed-init-method`` on CPU without ``--distributed-no-spawn`` spawns
   ``min(cuda_count, world_size) == 0`` workers and exits 0 having trained nothing: we raise.
5. numpy >= 1.24 removed ``np.float``/``np.int``, still used by fairseq's ``DynamicCRF`` and
   ``compute_mask_indices(no_overlap=True)``.
6. Atomic checkpoints: fairseq writes the first checkpoint atomically (``.tmp`` + rename) but
   *copies* it to ``checkpoint_last.pt`` / ``checkpoint_best.pt`` with a plain
   ``shutil.copyfile``; a kill during that copy leaves a truncated ``checkpoint_last.pt`` and
   ``--restore-file`` then fails. We copy to a temporary file and ``os.replace`` it.
7. Dropped sentences: the 0.12.3 snapshot's ``data_utils.batch_by_size`` discards the last batch
   when its size is not a multiple of ``--required-batch-size-multiple`` (default 8). So
   ``fairseq-generate`` silently translates and scores 8 of 10 test sentences, and training and
   validation lose up to 7 sentences per epoch. We put that last batch back.
8. wav2vec 2.0 masking: ``compute_mask_indices`` calls ``randint`` on a numpy ``Generator``,
   which has none, so ``--no-mask-overlap``, ``--no-mask-channel-overlap`` and ``--mask-selection
   uniform`` raised AttributeError. Its generators get the method (same random stream).
9. numpy 2 removals in fairseq's data code (a scan of the whole library found these three, besides
   fix 5): ``np.percentile(interpolation=)`` in ``data_utils.get_buckets`` (``--num-batch-buckets``
   for the translation tasks, ``audio_pretraining``), and ``np.compat.long`` in the bucketed
   ``LanguagePairDataset`` and in ``TokenBlockDataset(break_mode="eos")`` (``language_modeling``,
   ``masked_lm`` and denoising data, and their interactive/hub inference). Module-local numpy
   proxies give them ``method=`` and ``compat.long`` (= ``int``, as in numpy 1).
10. ``MaskedLMDictionary.load`` / legacy ``BertDictionary.load`` (``cross_lingual_lm``,
   ``legacy_masked_lm``, ``translation_from_pretrained_xlm``) raised TypeError: ``Dictionary.load``
   passes ``add_special_symbols``, which their ``__init__`` does not take. ``load`` builds them
   as before that keyword existed (their specials first, ``<mask>`` = 4).
11. An empty, truncated or foreign binarised file (``.bin``/``.idx``) ended in an AttributeError
   from ``MMapIndexedDataset.__del__``; it is now a ValueError naming the file and what is wrong.
12. The hub interface (``from_pretrained(...).translate``) built its tokenizer and BPE from
   ``cfg`` alone, where ``fairseq-interactive`` asks the task (``task.build_bpe``): a task whose
   data config names its sentencepiece model (multilingual, speech) translated raw text without
   it. The hub now asks the task, as ``fairseq-interactive`` does.
13. A sentence longer than ``--max-tokens`` stopped the run with a bare ``AssertionError`` from
   ``batch_by_size``, even with ``--skip-invalid-size-inputs-valid-test`` (fairseq filters by
   ``--max-*-positions`` only, except in training, where ``--max-tokens`` joins them). Such
   sentences are now filtered with the others: skipped and counted with the flag, else an error
   naming the split, the sentence, its length and the flag. ``batch_by_size`` names them too.
14. Generation limits: ``fairseq-generate``/``-interactive`` build the task from the command line,
   so a model trained with ``--max-source-positions 2048`` was held to the default 1024 unless
   the flag was repeated. The task's ``max_*_positions``/``max_*_samples`` not given on the
   command line now come from the checkpoint (logged).
15. ``--bf16`` on the CPU: fairseq's option parsing makes ``--bf16`` imply ``--tpu``, so
   ``fairseq-train --cpu --bf16`` died in ``Trainer`` with ``'NoneType' object has no attribute
   'xla_device'`` (no torch_xla). With ``--cpu`` there is no TPU: ``tpu`` is reset, and the model
   trains in bfloat16 with fairseq's fp32 master weights (``FP16Optimizer``), which CPUs with
   AVX512-BF16 or AMX run about 1.4x faster (README).
16. ``--stop-time-hours`` after ``--finetune-from-model``: the trainer restored the pre-trained
   checkpoint's ``previous_training_time`` even though meters, optimizer and schedule were reset,
   so a fine-tuning run with a time budget counted the pre-training's hours and stopped at once
   (a 2.5-minute en-ro fine-tuning of an 8-minute pre-trained model did 1 update). A checkpoint
   loaded with its meters reset (``--finetune-from-model``, ``--reset-meters``) now starts the
   training clock at 0; a plain resume keeps it.
"""
import argparse
import collections
import contextlib
import logging
import os
import re
import shutil
import sys
import types
import typing

import numpy as np
import torch

logger = logging.getLogger(__name__)

_APPLIED = set()


def _once(name):
    """Decorator: run a patch once per process and log that it was applied."""

    def wrap(fn):
        def run():
            if name in _APPLIED:
                return False
            fn()
            _APPLIED.add(name)
            logger.info("ptnmt_fairseq.compat: applied %s", name)
            return True

        run.__name__ = fn.__name__
        run.patch_name = name
        return run

    return wrap


# --------------------------------------------------------------------------------------------
# 1. weights_only allow-list
# --------------------------------------------------------------------------------------------
def fairseq_checkpoint_globals():
    """The globals that real fairseq checkpoints contain (and nothing callable beyond them).

    Listed from checkpoints written by ``fairseq-train`` (legacy ``--arch`` -> Namespace),
    ``--eval-bleu`` (numpy counts in the meters) and a two-rank gloo resume (omegaconf nodes and
    ``_TensorPlaceholder`` sent by ``_broadcast_object_slow``).
    """
    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode

    from fairseq.distributed.utils import _TensorPlaceholder

    entries = [
        argparse.Namespace,
        collections.defaultdict,
        collections.OrderedDict,
        dict,
        list,
        int,
        float,
        typing.Any,
        DictConfig,
        ListConfig,
        ContainerMetadata,
        Metadata,
        AnyNode,
        _TensorPlaceholder,
        np.ndarray,
        np.dtype,
    ]
    # numpy scalar dtypes (np.int64 counts) pickle as their dtype class, e.g. dtypes.Int64DType.
    entries += [type(np.dtype(t)) for t in ("int64", "int32", "float64", "float32", "bool")]
    # numpy < 2 writes numpy.core.multiarray._reconstruct, numpy 2 writes numpy._core...; accept
    # both names so checkpoints written on either side load (pytorch/pytorch#142153).
    from numpy._core.multiarray import _reconstruct, scalar

    entries += [
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        (_reconstruct, "numpy._core.multiarray._reconstruct"),
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
    ]
    return entries


@_once("weights_only allow-list for fairseq checkpoints")
def allow_fairseq_checkpoint_globals():
    torch.serialization.add_safe_globals(fairseq_checkpoint_globals())


# --------------------------------------------------------------------------------------------
# 2. resampling without sox_effects
# --------------------------------------------------------------------------------------------
def convert_waveform(
    waveform, sample_rate, normalize_volume=False, to_mono=False, to_sample_rate=None
):
    """Drop-in for ``fairseq.data.audio.audio_utils.convert_waveform`` without sox.

    Same contract: 2-D (channels x length) numpy array or tensor in, same type out, plus the new
    sample rate. Resampling is ``torchaudio.functional.resample`` (windowed sinc), volume
    normalisation is peak normalisation to 0 dBFS (what sox ``gain -n`` does).
    """
    import torchaudio.functional as AF

    is_np_input = isinstance(waveform, np.ndarray)
    wav = torch.from_numpy(waveform) if is_np_input else waveform
    wav = wav.float()
    if to_mono and wav.shape[0] > 1:
        wav = wav.mean(dim=0, keepdim=True)
    if to_sample_rate is not None and int(to_sample_rate) != int(sample_rate):
        wav = AF.resample(wav, int(sample_rate), int(to_sample_rate))
        sample_rate = int(to_sample_rate)
    if normalize_volume:
        peak = wav.abs().max()
        if peak > 0:
            wav = wav / peak
    return (wav.numpy() if is_np_input else wav), sample_rate


@_once("convert_waveform via torchaudio.functional.resample (no sox_effects)")
def replace_sox_convert_waveform():
    from fairseq.data.audio import audio_utils

    audio_utils.convert_waveform = convert_waveform
    try:  # the hub interface imported it under another name
        from fairseq.models.speech_to_text import hub_interface

        hub_interface.convert_wav = convert_waveform
    except ImportError:  # pragma: no cover - optional module
        pass


# --------------------------------------------------------------------------------------------
# 3./4. CPU distributed launch
# --------------------------------------------------------------------------------------------
@_once("torchrun/explicit-rank launch on CPU")
def fix_cpu_distributed_launch():
    from fairseq.distributed import utils as dist_utils

    original_launch_init = dist_utils._infer_torch_distributed_launch_init
    original_infer = dist_utils.infer_init_method
    original_call_main = dist_utils.call_main

    def _infer_torch_distributed_launch_init(cfg):
        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return original_launch_init(cfg)
        cfg.distributed_init_method = "env://"
        cfg.distributed_world_size = int(os.environ["WORLD_SIZE"])
        cfg.distributed_rank = int(os.environ["RANK"])
        cfg.device_id = 0  # no GPU to pick: every CPU rank uses "device" 0
        cfg.distributed_no_spawn = True

    def infer_init_method(cfg, force_distributed=False):
        # On CPU the default world size is 1, so fairseq returns before reading torchrun's env.
        launched = all(k in os.environ for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK"))
        if launched and cfg.distributed_world_size == 1 and int(os.environ["WORLD_SIZE"]) > 1:
            cfg.distributed_world_size = int(os.environ["WORLD_SIZE"])
        return original_infer(cfg, force_distributed)

    def call_main(cfg, main, **kwargs):
        dt = cfg.distributed_training
        if (
            dt.distributed_init_method is not None
            and not dt.distributed_no_spawn
            and dt.distributed_world_size > 1
            and not (torch.cuda.is_available() and torch.cuda.device_count() > 0)
        ):
            raise ValueError(
                f"--distributed-init-method {dt.distributed_init_method} with world size "
                f"{dt.distributed_world_size} on CPU would spawn 0 workers and train nothing. "
                "Start one process per rank with --distributed-no-spawn --distributed-rank R "
                "--distributed-backend gloo --ddp-backend legacy_ddp (see README, Distributed)."
            )
        return original_call_main(cfg, main, **kwargs)

    dist_utils._infer_torch_distributed_launch_init = _infer_torch_distributed_launch_init
    dist_utils.infer_init_method = infer_init_method
    dist_utils.call_main = call_main
    # fairseq_cli.train/generate bind ``distributed_utils`` as a module, so they see the patch.


# --------------------------------------------------------------------------------------------
# 5. numpy aliases
# --------------------------------------------------------------------------------------------
@_once("numpy np.float/np.int aliases used by fairseq")
def restore_numpy_aliases():
    # fairseq 0.12 (and both forks) still call np.int / np.float (fs#4945). They were exact
    # aliases of the builtins, so restoring them changes no numerics.
    for name, value in (("float", float), ("int", int)):
        if name not in np.__dict__:
            setattr(np, name, value)


# --------------------------------------------------------------------------------------------
# 6. atomic checkpoint copies
# --------------------------------------------------------------------------------------------
def atomic_copyfile(src_path, dst_path):
    """Copy so that ``dst_path`` is either the old file or the complete new one, never half."""
    tmp_path = f"{dst_path}.tmp{os.getpid()}"
    try:
        shutil.copyfile(src_path, tmp_path)
        os.replace(tmp_path, dst_path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
    return True


@_once("atomic checkpoint_last/best copies")
def make_checkpoint_copies_atomic():
    from fairseq.file_io import PathManager

    original_copy = PathManager.copy

    def copy(src_path, dst_path, overwrite=False):
        if PathManager.path_requires_pathmanager(dst_path):  # remote store: leave to iopath
            return original_copy(src_path, dst_path, overwrite=overwrite)
        if os.path.exists(dst_path) and not overwrite:
            raise FileExistsError(dst_path)
        return atomic_copyfile(src_path, dst_path)

    PathManager.copy = staticmethod(copy)


# --------------------------------------------------------------------------------------------
# 7. keep the remainder batch
# --------------------------------------------------------------------------------------------
@_once("batch_by_size keeps the last, smaller batch (no silently dropped sentences)")
def keep_remainder_batch():
    from fairseq.data import data_utils

    original_batch_by_size = data_utils.batch_by_size

    def batch_by_size(indices, num_tokens_fn, num_tokens_vec=None, max_tokens=None,
                      max_sentences=None, required_batch_size_multiple=1, fixed_shapes=None):
        if max_tokens is not None and num_tokens_vec is not None and len(indices):
            too_long = np.flatnonzero(np.asarray(num_tokens_vec) > max_tokens)
            if len(too_long):  # fix 13: named instead of the Cython AssertionError
                raise ValueError(too_long_message("a split", indices[too_long[0]],
                                                  num_tokens_vec[too_long[0]], max_tokens))
        batches = original_batch_by_size(
            indices, num_tokens_fn, num_tokens_vec=num_tokens_vec, max_tokens=max_tokens,
            max_sentences=max_sentences,
            required_batch_size_multiple=required_batch_size_multiple, fixed_shapes=fixed_shapes,
        )
        # Batches are consecutive slices of ``indices``, so what was dropped is the tail.
        covered = sum(len(b) for b in batches)
        if fixed_shapes is None and covered < len(indices):
            batches = list(batches) + [np.asarray(indices[covered:], dtype=np.int64)]
        return batches

    data_utils.batch_by_size = batch_by_size


# --------------------------------------------------------------------------------------------
# 8. wav2vec 2.0 masking: Generator.randint
# --------------------------------------------------------------------------------------------
class _RandintGenerator(np.random.Generator):
    """numpy's ``Generator`` with the ``randint`` that fairseq's masking code calls."""

    def randint(self, low, high=None, size=None, dtype=np.int64):
        return self.integers(low, high, size=size, dtype=dtype)  # the same [low, high)


class _ModuleProxy(types.ModuleType):
    def __init__(self, name, target, **overrides):
        super().__init__(name)
        self._target = target
        self.__dict__.update(overrides)

    def __getattr__(self, name):
        return getattr(self._target, name)


@_once("compute_mask_indices with numpy Generators (no-overlap and uniform wav2vec 2.0 masks)")
def fix_mask_generator_randint():
    """``compute_mask_indices`` draws from ``np.random.default_rng`` but calls ``rng.randint``,
    which only the legacy ``RandomState`` has: ``--no-mask-overlap``, ``--no-mask-channel-overlap``
    and ``--mask-selection uniform`` raised AttributeError. The functions look ``np`` up in
    ``data_utils``' namespace, so one proxy there covers every caller (wav2vec2, HuBERT, ...).
    """
    from fairseq.data import data_utils

    def default_rng(seed=None):  # the same stream as np.random.default_rng(seed)
        return _RandintGenerator(np.random.PCG64(seed))

    random_proxy = _ModuleProxy("numpy.random", np.random, default_rng=default_rng)
    data_utils.np = _ModuleProxy("numpy", np, random=random_proxy)


# --------------------------------------------------------------------------------------------
# 9. numpy 2 removals in fairseq's data code
# --------------------------------------------------------------------------------------------
def _percentile(a, q, *args, interpolation=None, **kwargs):
    """``np.percentile`` that also takes numpy < 2.4's ``interpolation=`` (``method=`` since 1.22)."""
    if interpolation is not None:
        kwargs.setdefault("method", interpolation)
    return np.percentile(a, q, *args, **kwargs)


@_once("numpy 2: np.percentile(interpolation=) and np.compat.long in fairseq's data code")
def fix_numpy2_removals():
    from fairseq.data import data_utils, language_pair_dataset, token_block_dataset

    # Chained onto data_utils' current numpy (fix 8's proxy), so neither fix undoes the other.
    data_utils.np = _ModuleProxy("numpy", data_utils.np, percentile=_percentile)
    numpy1_compat = types.SimpleNamespace(long=int)  # numpy 1.x: numpy.compat.long is int
    for module in (language_pair_dataset, token_block_dataset):
        module.np = _ModuleProxy("numpy", module.np, compat=numpy1_compat)


# --------------------------------------------------------------------------------------------
# 10. legacy MaskedLMDictionary.load
# --------------------------------------------------------------------------------------------
@_once("MaskedLMDictionary/BertDictionary.load (XLM tasks)")
def fix_legacy_masked_lm_dictionary_load():
    from fairseq.data.legacy.masked_lm_dictionary import MaskedLMDictionary

    def load(cls, f, add_special_symbols=True):
        if not add_special_symbols:
            raise ValueError(f"{cls.__name__} always starts with its special symbols")
        dictionary = cls()
        dictionary.add_from_file(f)
        return dictionary

    MaskedLMDictionary.load = classmethod(load)  # the legacy BertDictionary inherits it


# --------------------------------------------------------------------------------------------
# 11. binarised files checked before they are memory-mapped
# --------------------------------------------------------------------------------------------
MMAP_HEADER_BYTES = 9 + 8 + 1 + 8  # magic, version, dtype code, item count


def mmap_dataset_problem(prefix: str):
    """What is wrong with the ``prefix.idx`` / ``prefix.bin`` pair of fairseq's mmap format, or
    None. Reads the index header only."""
    import struct

    from fairseq.data.indexed_dataset import MMapIndexedDataset, _code_to_dtype

    index, data = prefix + ".idx", prefix + ".bin"
    for path in (index, data):
        if not os.path.isfile(path):
            return path, "does not exist"
    index_bytes = os.path.getsize(index)
    if index_bytes < MMAP_HEADER_BYTES:
        return index, f"{index_bytes} bytes, shorter than the index header: empty or truncated"
    with open(index, "rb") as stream:
        if stream.read(9) != MMapIndexedDataset.Index._HDR_MAGIC:
            return index, "not a fairseq mmap index (written with another --dataset-impl?)"
        stream.read(8)
        dtype = _code_to_dtype.get(struct.unpack("<B", stream.read(1))[0])
        (count,) = struct.unpack("<Q", stream.read(8))
        if dtype is None:
            return index, "unknown token dtype code"
        if index_bytes < MMAP_HEADER_BYTES + 12 * count:
            return index, f"truncated: {index_bytes} bytes cannot hold {count} items"
        sizes = np.frombuffer(stream.read(4 * count), dtype=np.int32)
        pointers = np.frombuffer(stream.read(8 * count), dtype=np.int64)
    needed = int(pointers[-1] + sizes[-1] * np.dtype(dtype).itemsize) if count else 0
    data_bytes = os.path.getsize(data)
    if data_bytes < needed or (count and data_bytes == 0):
        return data, (f"{data_bytes} bytes, but its index {os.path.basename(index)} needs "
                      f"{needed} for {count} sentences: empty or truncated")
    return None


@_once("binarised .bin/.idx files checked before memory-mapping (clear errors)")
def check_binarised_files():
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    original_do_init = MMapIndexedDataset._do_init

    def _do_init(self, path):
        problem = mmap_dataset_problem(path)
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}. Re-run fairseq-preprocess for this "
                             "split (an interrupted or failed run leaves such files).")
        original_do_init(self, path)

    def closing(original):
        def __del__(self):  # a failed __init__ has no buffer to close
            if "_bin_buffer_mmap" in self.__dict__:
                original(self)
        return __del__

    MMapIndexedDataset._do_init = _do_init
    MMapIndexedDataset.__del__ = closing(MMapIndexedDataset.__del__)
    MMapIndexedDataset.Index.__del__ = closing(MMapIndexedDataset.Index.__del__)


# --------------------------------------------------------------------------------------------
# 12. the hub interface builds its tokenizer and BPE as fairseq-interactive does
# --------------------------------------------------------------------------------------------
@_once("hub interface asks the task for its tokenizer and BPE (as fairseq-interactive)")
def hub_bpe_from_task():
    from fairseq import hub_utils

    original_init = hub_utils.GeneratorHubInterface.__init__

    def __init__(self, cfg, task, models):
        original_init(self, cfg, task, models)
        self.tokenizer = task.build_tokenizer(cfg.tokenizer)
        self.bpe = task.build_bpe(cfg.bpe)

    hub_utils.GeneratorHubInterface.__init__ = __init__


# --------------------------------------------------------------------------------------------
# 13. sentences longer than --max-tokens
# --------------------------------------------------------------------------------------------
def too_long_message(split, index, length, max_tokens):
    return (f"{split}: sentence {int(index)} has {int(length)} tokens, more than --max-tokens "
            f"{int(max_tokens)}: pass --skip-invalid-size-inputs-valid-test to skip such "
            "sentences (training skips them), or raise --max-tokens")


def _split_name(task, dataset):
    names = [name for name, d in getattr(task, "datasets", {}).items() if d is dataset]
    return names[0] if names else type(dataset).__name__


def _num_tokens(dataset, indices):
    """Token counts of ``indices``: ``num_tokens_vec`` where the dataset has one, which
    fairseq's ``BaseWrapperDataset`` does not (the base class raises NotImplementedError),
    else one ``num_tokens`` call per index, as fairseq's own batching falls back."""
    try:
        return np.asarray(dataset.num_tokens_vec(indices))
    except NotImplementedError:
        return np.asarray([dataset.num_tokens(i) for i in indices])


@_once("sentences longer than --max-tokens skipped (with the flag) or named")
def filter_sentences_longer_than_max_tokens():
    from fairseq.tasks import FairseqTask

    original_filter = FairseqTask.filter_indices_by_size
    original_iterator = FairseqTask.get_batch_iterator

    def get_batch_iterator(self, dataset, max_tokens=None, *args, **kwargs):
        self._max_tokens_being_batched = max_tokens
        try:
            return original_iterator(self, dataset, max_tokens, *args, **kwargs)
        finally:
            self._max_tokens_being_batched = None

    def filter_indices_by_size(self, indices, dataset, max_positions=None,
                               ignore_invalid_inputs=False):
        indices = original_filter(self, indices, dataset, max_positions, ignore_invalid_inputs)
        max_tokens = getattr(self, "_max_tokens_being_batched", None)
        if max_tokens is None or not len(indices):
            return indices
        lengths = _num_tokens(dataset, indices)
        too_long = lengths > max_tokens
        if not too_long.any():
            return indices
        split = _split_name(self, dataset)
        first = int(np.flatnonzero(too_long)[0])
        if not ignore_invalid_inputs:
            raise ValueError(too_long_message(split, indices[first], lengths[first], max_tokens))
        logger.warning(f"{split}: skipped {int(too_long.sum())} sentences longer than --max-tokens "
                       f"{max_tokens} (first: {int(indices[first])}, {int(lengths[first])} tokens)")
        return indices[~too_long]

    FairseqTask.get_batch_iterator = get_batch_iterator
    FairseqTask.filter_indices_by_size = filter_indices_by_size


# --------------------------------------------------------------------------------------------
# 14. generation limits from the checkpoint
# --------------------------------------------------------------------------------------------
LIMIT_OPTION = re.compile(r"max_\w*(positions|samples)")


def options_on_command_line(argv=None):
    """Dest names (``max_source_positions``) of the ``--options`` in ``argv``."""
    return {a[2:].split("=")[0].replace("-", "_") for a in (argv or sys.argv) if a.startswith("--")}


def adopt_checkpoint_limits(task, saved_cfg, arg_overrides=None, argv=None):
    """Set the task's length limits the user did not give to those the model was trained with."""
    saved_task = (saved_cfg or {}).get("task") if hasattr(saved_cfg, "get") else None
    if task is None or not saved_task or not hasattr(saved_task, "items"):
        return
    given = options_on_command_line(argv) | set(arg_overrides or {})
    for key, saved in saved_task.items():
        current = getattr(task.cfg, key, None)
        if (not LIMIT_OPTION.fullmatch(key) or key in given or saved is None or current is None
                or saved == current):
            continue
        with contextlib.suppress(Exception), _writable(task.cfg):
            setattr(task.cfg, key, saved)
            logger.info(f"--{key.replace('_', '-')} {saved}: the checkpoint's (was {current}); "
                        "give the flag to override")


@contextlib.contextmanager
def _writable(cfg):
    from omegaconf import DictConfig, open_dict

    with open_dict(cfg) if isinstance(cfg, DictConfig) else contextlib.nullcontext():
        yield


@_once("generation takes max positions from the checkpoint unless given")
def generation_limits_from_checkpoint():
    from fairseq import checkpoint_utils

    original = checkpoint_utils.load_model_ensemble_and_task

    def load_model_ensemble_and_task(filenames, arg_overrides=None, task=None, *args, **kwargs):
        ensemble, cfg, task = original(filenames, arg_overrides, task, *args, **kwargs)
        adopt_checkpoint_limits(task, cfg, arg_overrides)
        return ensemble, cfg, task

    checkpoint_utils.load_model_ensemble_and_task = load_model_ensemble_and_task


# --------------------------------------------------------------------------------------------
# 15. --bf16 on the CPU
# --------------------------------------------------------------------------------------------
@_once("--cpu --bf16 trains in bfloat16 on the CPU (no implied --tpu)")
def bf16_on_cpu():
    from fairseq.distributed import utils as dist_utils
    from omegaconf import open_dict

    original_call_main = dist_utils.call_main

    def call_main(cfg, main, **kwargs):
        if cfg.common.cpu and cfg.common.bf16 and cfg.common.tpu:  # implied by --bf16
            with open_dict(cfg):  # options.py copies it into these groups too
                for group in ("common", "distributed_training", "optimizer"):
                    if cfg.get(group) is not None and "tpu" in cfg[group]:
                        cfg[group].tpu = False
        return original_call_main(cfg, main, **kwargs)

    dist_utils.call_main = call_main


# --------------------------------------------------------------------------------------------
# 16. the training clock of a fine-tuning run
# --------------------------------------------------------------------------------------------
@_once("--finetune-from-model / --reset-meters start the training clock at 0")
def reset_training_clock_with_meters():
    import time

    from fairseq.trainer import Trainer

    original = Trainer.load_checkpoint

    def load_checkpoint(self, filename, reset_optimizer=False, reset_lr_scheduler=False,
                        optimizer_overrides=None, reset_meters=False):
        extra_state = original(self, filename, reset_optimizer, reset_lr_scheduler,
                               optimizer_overrides, reset_meters)
        if reset_meters:  # a new run from these weights: --stop-time-hours counts from now
            self._previous_training_time = 0
            self._start_time = time.time()
        return extra_state

    Trainer.load_checkpoint = load_checkpoint


PATCHES = (
    allow_fairseq_checkpoint_globals,
    replace_sox_convert_waveform,
    fix_cpu_distributed_launch,
    restore_numpy_aliases,
    make_checkpoint_copies_atomic,
    keep_remainder_batch,
    fix_mask_generator_randint,
    fix_numpy2_removals,  # after fix 8: it wraps fix 8's data_utils proxy
    fix_legacy_masked_lm_dictionary_load,
    check_binarised_files,
    hub_bpe_from_task,
    filter_sentences_longer_than_max_tokens,
    generation_limits_from_checkpoint,
    bf16_on_cpu,  # after fix 3: it wraps fix 3's call_main
    reset_training_clock_with_meters,
)


def apply():
    """Apply every fix (idempotent). Returns the names of the fixes applied by this call."""
    return [p.patch_name for p in PATCHES if p()]


def bert_attention_mask(bert_config, hidden_states, keep):
    """The self-attention mask a HuggingFace ``BertLayer`` expects for ``keep`` (B x T, True =
    attend), in the format of the model's attention implementation (eager or sdpa).

    transformers >= 5 builds it with ``masking_utils.create_bidirectional_mask``; 4.x used
    ``get_extended_attention_mask`` (an additive B x 1 x 1 x T float mask).
    """
    try:
        from transformers.masking_utils import create_bidirectional_mask
    except ImportError:  # transformers 4.x
        mask = keep[:, None, None, :].to(hidden_states.dtype)
        return (1.0 - mask) * torch.finfo(hidden_states.dtype).min
    return create_bidirectional_mask(
        config=bert_config, inputs_embeds=hidden_states, attention_mask=keep.long()
    )


def run_bert_layer(layer, hidden_states, attention_mask):
    """One HuggingFace ``BertLayer``: transformers 5 returns a tensor, 4.x a tuple."""
    out = layer(hidden_states, attention_mask=attention_mask)
    return out[0] if isinstance(out, tuple) else out


@contextlib.contextmanager
def language_pair_dataset_class(dataset_class):
    """Make ``fairseq.tasks.translation.load_langpair_dataset`` build ``dataset_class``.

    fairseq 0.12 has no hook for the dataset class and asserts that source and target share
    pad/eos/unk ids, which two BERT vocabularies do not. Scoped to one call, so nothing else
    sees the swap.
    """
    from fairseq.tasks import translation

    original = translation.LanguagePairDataset
    translation.LanguagePairDataset = dataset_class
    try:
        yield
    finally:
        translation.LanguagePairDataset = original
