"""Translation tasks whose dictionaries *are* BERT vocabularies (``BertDictionary``).

* ``translation_bert``: autoregressive translation (fairseq's ``translation``) on BERT ids, with
  [CLS] prepended to the source as BERT expects. Used by AB-Net-Enc and, later, by every method
  that feeds the source to a BERT (C-MLM, CTNMT, BERT-fused).
* Binarise for it with ``fairseq-preprocess --user-dir ptnmt_fairseq --task translation_bert
  --srcdict ... --tgtdict ...`` (``examples/data/bert_binarize.sh``).

Both tasks check each loaded split: ids binarised with another dictionary are refused.
"""
import logging
import os
from dataclasses import dataclass, field

import torch
from fairseq import utils
from fairseq.data import LanguagePairDataset, data_utils
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask, load_langpair_dataset

from ptnmt_fairseq.common.bert.dictionary import BertDictionary, check_binarized_ids
from ptnmt_fairseq.common.bert.feature_cache import read_manifest, wrap_split
from ptnmt_fairseq.common.compat import language_pair_dataset_class
from ptnmt_fairseq.common.scoring import warn_damaged_references

logger = logging.getLogger(__name__)


class BertLanguagePairDataset(LanguagePairDataset):
    """A ``LanguagePairDataset`` whose two sides may use different special ids (one [PAD]).

    The decoder input of autoregressive models starts with the *target* [SEP] (fairseq's
    convention of starting with eos, in the target vocabulary), not the source one.
    """

    def __init__(self, src, src_sizes, src_dict, tgt=None, tgt_sizes=None, tgt_dict=None,
                 **kwargs):
        if tgt_dict is not None and tgt_dict.pad() != src_dict.pad():
            raise ValueError(
                f"[PAD] is id {src_dict.pad()} in {getattr(src_dict, 'source', 'source')} but "
                f"{tgt_dict.pad()} in {getattr(tgt_dict, 'source', 'target')}: fairseq pads "
                "source and target with one id"
            )
        kwargs.setdefault("eos", tgt_dict.eos() if tgt_dict is not None else None)
        super().__init__(src, src_sizes, src_dict, tgt, tgt_sizes, None, **kwargs)
        self.tgt_dict = tgt_dict


def load_bert_langpair_dataset(*args, **kwargs):
    """fairseq's ``load_langpair_dataset``, building a ``BertLanguagePairDataset``."""
    with language_pair_dataset_class(BertLanguagePairDataset):
        return load_langpair_dataset(*args, **kwargs)


class BertVocabularyTaskMixin:
    """Loads ``dict.*.txt`` as ``BertDictionary`` and checks the ids of every loaded split.

    Two BERTs need not share special ids ([SEP] is 102 in bert-base-uncased, 4 in
    bert-base-german-cased), which fairseq's ``TranslationTask.setup_task`` asserts; and fairseq's
    ``LanguagePairDataset`` would start the decoder input with the *source* eos. Both are handled
    here (``BertLanguagePairDataset``). One [PAD] id is still required: fairseq collates source
    and target with one pad.
    """

    @classmethod
    def load_dictionary(cls, filename):
        return BertDictionary.load(filename)

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        paths = utils.split_paths(cfg.data)
        if cfg.source_lang is None or cfg.target_lang is None:
            cfg.source_lang, cfg.target_lang = data_utils.infer_language_pair(paths[0])
        if cfg.source_lang is None or cfg.target_lang is None:
            raise ValueError(f"cannot infer the language pair in {paths[0]}: pass -s and -t")
        src_dict = cls.load_dictionary(os.path.join(paths[0], f"dict.{cfg.source_lang}.txt"))
        tgt_dict = cls.load_dictionary(os.path.join(paths[0], f"dict.{cfg.target_lang}.txt"))
        logger.info("[%s] BERT dictionary: %d types", cfg.source_lang, len(src_dict))
        logger.info("[%s] BERT dictionary: %d types", cfg.target_lang, len(tgt_dict))
        return cls(cfg, src_dict, tgt_dict)

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        warn_damaged_references(sample, self.target_dictionary, type(self).__name__)
        return super().inference_step(generator, models, sample, prefix_tokens=prefix_tokens,
                                      constraints=constraints)

    def build_dataset_for_inference(self, src_tokens, src_lengths, constraints=None):
        """fairseq-interactive / hub input as the binarised data has it: [CLS] x [SEP], in a
        dataset that allows the two BERTs' different special ids."""
        bos = self.src_dict.bos()
        sources = [t if len(t) and t[0] == bos else torch.cat([t.new_tensor([bos]), t])
                   for t in src_tokens]
        return BertLanguagePairDataset(
            sources, [len(t) for t in sources], self.source_dictionary,
            tgt_dict=self.target_dictionary, constraints=constraints,
            left_pad_source=self.cfg.left_pad_source)

    def check_split(self, split, data_path):
        src, tgt = self.cfg.source_lang, self.cfg.target_lang
        dataset = self.datasets[split]
        for lang, part, dictionary in ((src, dataset.src, self.src_dict),
                                       (tgt, dataset.tgt, self.tgt_dict)):
            if part is not None:
                path = os.path.join(data_path, f"{split}.{src}-{tgt}.{lang}.bin")
                check_binarized_ids(part, dictionary, path)


@dataclass
class TranslationBertConfig(TranslationConfig):
    # BERT has absolute positions; BertEncoder counts positions over real tokens only, but right
    # padding is what the authors used and keeps batches identical to theirs.
    left_pad_source: bool = field(default=False, metadata={"help": "pad source on the left"})
    bert_feature_cache: str = field(default="", metadata={
        "help": "directory of cached frozen-BERT source features "
                "(python -m ptnmt_fairseq.common.bert.feature_cache); models that read "
                "net_input['bert_features'] (CTNMT, BERT-fused) then skip the BERT forward pass"})


@register_task("translation_bert", dataclass=TranslationBertConfig)
class TranslationBertTask(BertVocabularyTaskMixin, TranslationTask):
    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        paths = self.cfg.data.split(os.pathsep)
        data_path = paths[(epoch - 1) % len(paths)]
        self.datasets[split] = load_bert_langpair_dataset(
            data_path, split, self.cfg.source_lang, self.src_dict, self.cfg.target_lang,
            self.tgt_dict, combine=combine, dataset_impl=self.cfg.dataset_impl,
            upsample_primary=self.cfg.upsample_primary,
            left_pad_source=self.cfg.left_pad_source, left_pad_target=self.cfg.left_pad_target,
            max_source_positions=self.cfg.max_source_positions,
            max_target_positions=self.cfg.max_target_positions,
            load_alignments=self.cfg.load_alignments, truncate_source=self.cfg.truncate_source,
            num_buckets=self.cfg.num_batch_buckets, shuffle=(split != "test"),
            pad_to_multiple=self.cfg.required_seq_len_multiple,
            prepend_bos_src=self.src_dict.bos(),  # BERT input: [CLS] x [SEP]
        )
        self.check_split(split, data_path)
        if self.cfg.bert_feature_cache:
            self.datasets[split] = wrap_split(self.datasets[split], self.cfg.bert_feature_cache,
                                              split, data_path, self.cfg.source_lang,
                                              self.cfg.target_lang)

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        # A model warm-started from another checkpoint (BERT-fused: --warm-start-nmt) loads it
        # when training starts, not when its own checkpoint is loaded (generate, hub, resume).
        if not from_checkpoint and hasattr(model, "warm_start"):
            model.warm_start()
        if self.cfg.bert_feature_cache and not from_checkpoint:  # a decoded model reads no cache
            check = getattr(model, "check_bert_feature_cache", None)
            if check is None:
                raise ValueError(f"--bert-feature-cache: the model {type(model).__name__} does "
                                 "not read cached BERT features (CTNMT and BERT-fused do)")
            check(read_manifest(self.cfg.bert_feature_cache), self.cfg.bert_feature_cache)
        return model
