"""The teacher's soft labels, computed once (C-MLM distillation, stage 2; Chen et al., ACL 2020,
Sec. 4.2 and supplementary A; ChenRocks/Distill-BERT-Textgen, ``dump_teacher_topk.py``).

**Masks.** Each target sentence of n tokens (EOS included) is copied ``min(n, 7)`` times; copy i
masks the positions j with j mod 7 = i, so every position is masked exactly once and the teacher
predicts it from the source and the rest of the target (``circular_masks``).

**Store** (a directory, format ``ptnmt-cmlm-soft-labels`` version 1), keyed by fairseq dataset
index, memory-mapped when read:

- ``header.json``: format, version, teacher (path or name), k, num_sentences, num_tokens,
  target_file and target_sha256 (the binarised target data the labels belong to: ``.bin`` then
  ``.idx``), source_file and source_sha256 (the same of the source the teacher read),
  dictionary_sha256 (the student's target ``dict.txt``), created;
- ``offsets.npy``: int64, num_sentences + 1; sentence i owns rows offsets[i] .. offsets[i+1] - 1,
  one per target token (EOS included);
- ``ids.npy``: int32, num_tokens x k, the student-dictionary ids of the teacher's top-k logits,
  best first;
- ``logits.npy``: float16, num_tokens x k, those logits.

A store is written to a temporary directory and renamed into place, so a crash never leaves a
half-written store under the final name. Opening one refuses, naming the file and the mismatch,
a store of another format or version, another target or source file (checksum), another
dictionary, a
different sentence count, any sentence whose row count differs from its target length, and a
k smaller than the one asked for.
"""
import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Sequence

import numpy as np

from ptnmt_fairseq.common.fingerprints import binarized_files, file_sha256

FORMAT = "ptnmt-cmlm-soft-labels"
VERSION = 1
COPIES = 7  # the authors' dump_teacher_topk.py
STORED_K = 128  # stored; training slices the first --kd-topk (8)


class SoftLabelError(ValueError):
    """A soft-label store that does not belong to the data it is used with."""


def circular_masks(length: int, copies: int = COPIES) -> List[np.ndarray]:
    """Positions masked in each copy of a target of ``length`` tokens (EOS included): copy i
    masks j with j mod ``copies`` = i; ``min(length, copies)`` copies, each position in exactly
    one of them."""
    if length < 1:
        raise ValueError(f"a target of {length} tokens has nothing to mask")
    positions = np.arange(length)
    return [positions[positions % copies == i] for i in range(min(length, copies))]


class StoreWriter:
    """A store being written: fill ``ids`` and ``logits`` (num_tokens x k memory maps in a
    staging directory; sentence i's rows start at ``offsets[i]``), then ``commit()`` renames the
    staging directory to its final name. Leaving a ``with`` block by an exception removes it."""

    def __init__(self, directory, lengths: Sequence[int], k: int, *, teacher: str, target_prefix,
                 dictionary_path, source_prefix=None):
        self.directory = Path(directory)
        lengths = np.asarray(lengths, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.header = {
            "format": FORMAT, "version": VERSION, "teacher": str(teacher), "k": int(k),
            "num_sentences": int(len(lengths)), "num_tokens": int(self.offsets[-1]),
            "target_file": str(Path(str(target_prefix)).name),
            "target_sha256": file_sha256(*binarized_files(target_prefix)),
            "dictionary_sha256": file_sha256(dictionary_path),
        }
        if source_prefix is not None:  # the teacher read the source too
            self.header["source_file"] = str(Path(str(source_prefix)).name)
            self.header["source_sha256"] = file_sha256(*binarized_files(source_prefix))
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.directory.name}.",
                                             dir=self.directory.parent))
        shape = (int(self.offsets[-1]), int(k))
        self.ids = np.lib.format.open_memmap(self.staging / "ids.npy", "w+", np.int32, shape)
        self.logits = np.lib.format.open_memmap(self.staging / "logits.npy", "w+", np.float16,
                                                shape)

    def rows(self, index: int) -> slice:
        return slice(int(self.offsets[index]), int(self.offsets[index + 1]))

    def commit(self) -> Path:
        self.ids.flush()
        self.logits.flush()
        del self.ids, self.logits
        np.save(self.staging / "offsets.npy", self.offsets)
        self.header["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds")
        (self.staging / "header.json").write_text(json.dumps(self.header, indent=2) + "\n")
        if self.directory.exists():
            shutil.rmtree(self.directory)
        os.replace(self.staging, self.directory)
        return self.directory

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is not None:
            shutil.rmtree(self.staging, ignore_errors=True)


def write_store(directory, ids: np.ndarray, logits: np.ndarray, lengths: Sequence[int],
                **identity) -> Path:
    """Write a whole store at once: ``ids``/``logits`` are num_tokens x k (sentence 0's rows
    first), ``lengths`` the target lengths (EOS included) in dataset-index order; ``identity``:
    teacher, target_prefix, dictionary_path and optionally source_prefix (``StoreWriter``)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if ids.shape != logits.shape or ids.ndim != 2 or ids.shape[0] != int(lengths.sum()):
        raise ValueError(f"ids {ids.shape} and logits {logits.shape} must both be "
                         f"{int(lengths.sum())} tokens x k")
    with StoreWriter(directory, lengths, ids.shape[1], **identity) as writer:
        writer.ids[:] = ids
        writer.logits[:] = logits
        return writer.commit()


class SoftLabelStore:
    """A store opened against the data it must belong to (see the module doc); ``labels(i)``
    gives sentence i's (ids, logits), each len(target i) x k, as memory-mapped views."""

    def __init__(self, directory, target_prefix, dictionary_path, target_lengths, k: int,
                 source_prefix=None):
        self.directory = Path(directory)
        header_path = self.directory / "header.json"
        if not header_path.is_file():
            raise SoftLabelError(f"{self.directory}: no header.json, not a soft-label store "
                                 "(python -m ptnmt_fairseq.cmlm_kd.dump_soft_labels writes one)")
        self.header = json.loads(header_path.read_text())
        self._check_header(header_path, target_prefix, dictionary_path, k, source_prefix)
        self.offsets = np.load(self.directory / "offsets.npy")
        self.ids = np.load(self.directory / "ids.npy", mmap_mode="r")
        self.logits = np.load(self.directory / "logits.npy", mmap_mode="r")
        self.k = k
        self._check_lengths(np.asarray(target_lengths, dtype=np.int64))

    def _check_header(self, header_path, target_prefix, dictionary_path, k, source_prefix):
        h = self.header
        if k < 1:
            raise SoftLabelError(f"--kd-topk {k}: at least 1 teacher logit per token")
        if h.get("format") != FORMAT or h.get("version") != VERSION:
            raise SoftLabelError(f"{header_path}: format {h.get('format')!r} version "
                                 f"{h.get('version')!r}; this code reads {FORMAT!r} {VERSION}")
        bin_path, _ = binarized_files(target_prefix)
        if h["target_sha256"] != file_sha256(*binarized_files(target_prefix)):
            raise SoftLabelError(
                f"{header_path}: the labels were computed for another {h['target_file']} than "
                f"{bin_path} (checksum differs): re-binarised or changed data; dump them again")
        if source_prefix is not None and h.get("source_sha256") != file_sha256(
                *binarized_files(source_prefix)):
            source_bin, _ = binarized_files(source_prefix)
            raise SoftLabelError(
                f"{header_path}: the teacher read another source than {source_bin} "
                f"({h.get('source_file', 'none recorded')}; checksum differs): dump them again")
        if h["dictionary_sha256"] != file_sha256(dictionary_path):
            raise SoftLabelError(f"{header_path}: the labels' ids index another target "
                                 f"dictionary than {dictionary_path}; dump them again")
        if h["k"] < k:
            raise SoftLabelError(f"{header_path}: {h['k']} logits stored per token, "
                                 f"--kd-topk {k} asked for")

    def _check_lengths(self, target_lengths):
        where = self.directory
        if len(self.offsets) - 1 != len(target_lengths):
            raise SoftLabelError(f"{where}: labels for {len(self.offsets) - 1} sentences, the "
                                 f"data has {len(target_lengths)}")
        if self.ids.shape != self.logits.shape or self.ids.shape[0] != self.offsets[-1]:
            raise SoftLabelError(f"{where}: ids {self.ids.shape}, logits {self.logits.shape} and "
                                 f"offsets (last {int(self.offsets[-1])}) disagree: a damaged "
                                 "store")
        counts = np.diff(self.offsets)
        bad = np.nonzero(counts != target_lengths)[0]
        if len(bad):
            i = int(bad[0])
            raise SoftLabelError(f"{where}: sentence {i} has {int(counts[i])} label rows, its "
                                 f"target {int(target_lengths[i])} tokens ({len(bad)} such "
                                 "sentences): the labels would shift against the targets")

    def labels(self, index: int):
        """(ids, logits) of sentence ``index``: target length x k."""
        start, end = self.offsets[index], self.offsets[index + 1]
        return self.ids[start:end, :self.k], self.logits[start:end, :self.k]

    def batch_labels(self, indices):
        """(ids, logits) of the sentences ``indices``, one after the other: (sum of their
        target lengths) x k, read from the memory map in one go."""
        rows = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in indices])
        return self.ids[rows, :self.k], self.logits[rows, :self.k]
