"""``translation_cmlm_kd``: the BERT family's ``translation_bert`` task (the student's vocabulary
is the teacher's WordPiece vocabulary, ids = BERT ids) whose training split carries the C-MLM
teacher's soft labels (``--soft-labels DIR``, written by ``dump_soft_labels``), for the
``cmlm_kd`` criterion and any fairseq seq2seq architecture (``transformer``, ``lstm``, ...).

The store is checked against the binarised training target and the target dictionary when the
split is loaded (``soft_labels.SoftLabelStore``); each batch gets ``soft_ids`` and ``soft_logits``
(B x T x K, aligned with ``target``; K = ``--kd-topk``, 8 as the authors), looked up by the
batch's dataset indices, so fairseq's filtering and shuffling cannot shift them.
"""
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset
from fairseq.tasks import register_task

from ptnmt_fairseq.common.bert.task import TranslationBertConfig, TranslationBertTask

from ptnmt_fairseq.cmlm_kd.soft_labels import SoftLabelError, SoftLabelStore

DEFAULT_KD_TOPK = 8  # the authors' --kd_topk


@dataclass
class CmlmKdTaskConfig(TranslationBertConfig):
    soft_labels: Optional[str] = field(default=None, metadata={
        "help": "soft-label store of the training split (dump_soft_labels output)"})
    kd_topk: int = field(default=DEFAULT_KD_TOPK, metadata={
        "help": "teacher logits per token used in training, of the K stored (paper: 8)"})



class SoftLabelDataset(BaseWrapperDataset):
    """A ``LanguagePairDataset`` whose batches also hold the store's labels of their sentences."""

    def __init__(self, dataset, store: SoftLabelStore, pad: int):
        super().__init__(dataset)
        self.store, self.pad = store, pad

    def collater(self, samples):
        batch = self.dataset.collater(samples)
        if not batch:
            return batch
        target = batch["target"]
        if self.dataset.left_pad_target:
            raise ValueError("--soft-labels needs right-padded targets (no --left-pad-target)")
        real = target.ne(self.pad)  # right-padded: row-major order = sentence by sentence
        sentence_ids, sentence_logits = self.store.batch_labels(batch["id"].tolist())
        if int(real.sum()) != len(sentence_ids):
            raise SoftLabelError(f"{self.store.directory}: {len(sentence_ids)} label rows for the "
                                 f"{int(real.sum())} target tokens of sentences "
                                 f"{batch['id'].tolist()} (targets truncated after the dump?)")
        ids = torch.full((*target.shape, self.store.k), self.pad, dtype=torch.long)
        logits = torch.zeros((*target.shape, self.store.k), dtype=torch.float16)
        ids[real] = torch.from_numpy(sentence_ids.astype(np.int64))
        logits[real] = torch.from_numpy(sentence_logits)
        batch["soft_ids"], batch["soft_logits"] = ids, logits
        return batch


def single_data_directory(data, split, src, tgt):
    """The one data directory of ``--soft-labels`` training: a store belongs to one binarised
    split, so data shards (DATA1:DATA2, or SPLIT1 files beside SPLIT) are refused."""
    paths = data.split(os.pathsep)
    if len(paths) > 1:
        raise ValueError(f"--soft-labels: one data directory, not {len(paths)} shards ({data}); "
                         "binarise the training data into one")
    for pair in (f"{src}-{tgt}", f"{tgt}-{src}"):
        if os.path.exists(os.path.join(paths[0], f"{split}1.{pair}.{tgt}.bin")):
            raise ValueError(f"--soft-labels: {paths[0]} has {split}1 files beside {split}: a "
                             "store labels one binarised split; binarise the training data "
                             "into one")
    return paths[0]


def target_prefix(data, split, src, tgt):
    """The binarised target of ``split``: DATA/SPLIT.SRC-TGT.TGT (or DATA/SPLIT.TGT-SRC.TGT),
    as fairseq's translation task finds it."""
    for pair in (f"{src}-{tgt}", f"{tgt}-{src}"):
        prefix = os.path.join(data, f"{split}.{pair}.{tgt}")
        if os.path.exists(prefix + ".bin"):
            return prefix
    raise FileNotFoundError(f"{data}: no binarised {split}.{src}-{tgt}.{tgt}.bin")


@register_task("translation_cmlm_kd", dataclass=CmlmKdTaskConfig)
class CmlmKdTask(TranslationBertTask):
    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        super().load_dataset(split, epoch, combine, **kwargs)
        if split != self.cfg.train_subset or not self.cfg.soft_labels:
            return
        data = single_data_directory(self.cfg.data, split, self.cfg.source_lang,
                                     self.cfg.target_lang)
        dataset = self.datasets[split]
        src, tgt = self.cfg.source_lang, self.cfg.target_lang
        store = SoftLabelStore(
            self.cfg.soft_labels, target_prefix(data, split, src, tgt),
            os.path.join(data, f"dict.{tgt}.txt"), dataset.tgt_sizes, self.cfg.kd_topk,
            source_prefix=target_prefix(data, split, tgt, src))
        self.datasets[split] = SoftLabelDataset(dataset, store, self.tgt_dict.pad())

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if ignore_grad and "soft_ids" not in sample:
            # A rank with no batch left trains on fairseq's dummy batch with its loss zeroed;
            # the trainer takes that batch from the validation iterator when it has one
            # (Trainer.get_valid_iterator -> reset_dummy_batch), which has no soft labels.
            sample = with_placeholder_labels(sample, self.cfg.kd_topk, self.tgt_dict.pad())
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)


def with_placeholder_labels(sample, k: int, pad: int):
    """``sample`` with all-pad ``soft_ids`` and zero ``soft_logits`` (B x T x K), for a batch
    whose loss is discarded."""
    target = sample["target"]
    return dict(sample, soft_ids=torch.full((*target.shape, k), pad, dtype=torch.long,
                                            device=target.device),
                soft_logits=target.new_zeros((*target.shape, k), dtype=torch.float16))
