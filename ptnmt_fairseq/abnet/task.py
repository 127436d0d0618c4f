"""``translation_abnet``: conditional-MLM translation on BERT vocabularies (AB-Net, Sec. 3.3).

fairseq's ``translation_lev`` with two changes that matter for BERT:
* the noise writes [MASK], which BERT was pre-trained to fill, where fairseq writes [UNK];
* source and target are [CLS] ... [SEP] (fairseq's bos/eos mapped onto BERT's tokens).
"""
from dataclasses import dataclass, field

import torch
from fairseq.tasks import register_task
from fairseq.tasks.translation_lev import (
    NOISE_CHOICES, TranslationLevenshteinConfig, TranslationLevenshteinTask,
)
from fairseq import utils

from ptnmt_fairseq.common.bert.task import BertLanguagePairDataset, BertVocabularyTaskMixin
from ptnmt_fairseq.common.compat import language_pair_dataset_class


def cmlm_random_mask(target_tokens, bos, eos, pad, mask):
    """Sec. 3.3, AB-Net: |y_m| ~ U{1, ..., |y|} target tokens are replaced with [MASK].

    |y| counts the real tokens ([CLS]/[SEP]/[PAD] are never masked). The loss is then taken on
    exactly the [MASK] positions of ``prev_target``.
    """
    maskable = target_tokens.ne(pad) & target_tokens.ne(bos) & target_tokens.ne(eos)
    scores = target_tokens.new_empty(target_tokens.size(), dtype=torch.float).uniform_()
    scores.masked_fill_(~maskable, 2.0)  # sort the unmaskable positions last
    num_maskable = maskable.sum(1, keepdim=True)
    # floor(|y| * u) + 1 with u ~ U[0, 1) is uniform on {1, ..., |y|}
    num_masked = (num_maskable.float() * torch.rand_like(num_maskable, dtype=torch.float)).long() + 1
    num_masked = torch.minimum(num_masked, num_maskable)
    ranks = scores.sort(1)[1].sort(1)[1]  # rank of each position among random scores
    return target_tokens.masked_fill(ranks < num_masked, mask)


@dataclass
class TranslationAbnetConfig(TranslationLevenshteinConfig):
    noise: NOISE_CHOICES = field(default="random_mask", metadata={"help": "type of noise"})
    left_pad_source: bool = field(default=False, metadata={"help": "pad source on the left"})


@register_task("translation_abnet", dataclass=TranslationAbnetConfig)
class TranslationAbnetTask(BertVocabularyTaskMixin, TranslationLevenshteinTask):
    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        with language_pair_dataset_class(BertLanguagePairDataset):
            super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        paths = utils.split_paths(self.cfg.data)
        self.check_split(split, paths[(epoch - 1) % len(paths)])

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        # fairseq's NAT models mask with ``self.unk``; ours point it at [MASK]. A model that
        # still masks with [UNK] (e.g. plain cmlm_transformer) would see no masked targets here.
        mask_symbol = getattr(model, "unk", None)
        if mask_symbol is not None and mask_symbol != self.tgt_dict.mask():
            raise ValueError(
                f"{type(model).__name__} masks with id {mask_symbol} "
                f"({self.tgt_dict[mask_symbol]!r}) but translation_abnet writes [MASK] = "
                f"{self.tgt_dict.mask()}: train fairseq's cmlm_transformer with --task "
                "translation_lev on fairseq-binarised data (recipes/abnet/run.sh does this)."
            )
        return model

    def build_generator(self, models, args, **kwargs):
        # fairseq's --max-len-a/--max-len-b bound Mask-Predict canvases as they bound
        # autoregressive outputs (a canvas counts [CLS] and [SEP]).
        for model in models:
            model.max_len_a = getattr(args, "max_len_a", 0.0)
            model.max_len_b = getattr(args, "max_len_b", None)
        return super().build_generator(models, args, **kwargs)

    def inject_noise(self, target_tokens):
        d = self.tgt_dict
        if self.cfg.noise == "random_mask":
            return cmlm_random_mask(target_tokens, d.bos(), d.eos(), d.pad(), d.mask())
        if self.cfg.noise == "full_mask":
            keep = target_tokens.eq(d.bos()) | target_tokens.eq(d.eos()) | target_tokens.eq(d.pad())
            return target_tokens.masked_fill(~keep, d.mask())
        return super().inject_noise(target_tokens)
