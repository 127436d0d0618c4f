"""``translation_multi_langtok``: many-to-many translation with language tokens (mRASP, mRASP2,
LaSS, and MASS/CSP in ``mass/task.py``).

DATA holds a joint sentencepiece model (``spm.model``), its fairseq dictionary (``dict.txt``,
with a language token per language) and raw text per direction, ``<split>.<src>-<tgt>.<lang>``
(``examples/data/prepare_multilingual.py`` writes all of it from the gettext catalogs).
``--lang-pairs de-en,en-de,...`` lists the training directions; their corpora are mixed by
temperature sampling, q_i ∝ (n_i / N)^(1/T) (``--sampling-temperature``). ``fairseq-generate -s de
-t fr`` decodes one direction, trained or not (zero-shot).

``--ras-dicts`` and ``--ras-prob`` turn on random aligned substitution (mRASP) on the training
sources: each epoch, source words found in the bilingual dictionaries are replaced with
probability p by a translation in another language, before subword splitting, reproducibly
from ``--seed`` and the epoch (``ptnmt_fairseq/common/multilingual/ras.py``). That is mRASP.
Subclasses add training corpora through ``extra_training_directions`` (mRASP2's aligned
augmentation: ``ptnmt_fairseq/mrasp2/task.py``).
"""
import logging
from argparse import Namespace
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fairseq.data import Dictionary, encoders
from fairseq.data.multilingual.sampled_multi_dataset import SampledMultiDataset
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II

from ptnmt_fairseq.common.multilingual.ras import AlignedDictionaries
from ptnmt_fairseq.common.language_tokens import TagAsBosGenerationMixin
from ptnmt_fairseq.common.multilingual.dataset import (
    MRASP_LANG_TOK, LangTokTranslationDataset, WordPieceCache, read_parallel, temperature_ratios,
)

logger = logging.getLogger(__name__)


@dataclass
class MultiLangTokConfig(FairseqDataclass):
    data: str = field(default="", metadata={"help": "directory with spm.model, dict.txt and "
                                                    "<split>.<src>-<tgt>.<lang> text"})
    lang_pairs: str = field(default="", metadata={"help": "training directions, e.g. "
                                                          "en-de,de-en,en-fr,fr-en"})
    source_lang: Optional[str] = field(default=None, metadata={
        "help": "generation: source language", "argparse_alias": "-s"})
    target_lang: Optional[str] = field(default=None, metadata={
        "help": "generation: target language", "argparse_alias": "-t"})
    lang_tok_template: str = field(default=MRASP_LANG_TOK, metadata={
        "help": "language token; {LANG} is the upper-case code, {} the code as written"})
    sampling_temperature: float = field(default=2.0, metadata={
        "help": "temperature T of the sampling across directions (1: proportional)"})
    ras_dicts: str = field(default="", metadata={
        "help": "comma-separated word dictionaries (src<TAB>tgt lines), named SRC-TGT.txt or "
                "given as SRC-TGT:PATH; RAS is on when --ras-prob > 0"})
    ras_prob: float = field(default=0.0, metadata={
        "help": "probability of replacing a dictionary word (mRASP paper: 0.3)"})
    max_source_positions: int = field(default=1024, metadata={"help": "longest source"})
    max_target_positions: int = field(default=1024, metadata={"help": "longest target"})
    seed: int = II("common.seed")
    train_subset: str = II("dataset.train_subset")


@register_task("translation_multi_langtok", dataclass=MultiLangTokConfig)
class MultiLangTokTask(TagAsBosGenerationMixin, FairseqTask):
    one_language_hint = "generate one direction at a time (-s SRC -t TGT)"

    def __init__(self, cfg: MultiLangTokConfig, dictionary, spm):
        super().__init__(cfg)
        self.dictionary, self.spm = dictionary, spm
        self.pieces = WordPieceCache(spm, dictionary)
        self.lang_pairs = parse_lang_pairs(cfg.lang_pairs) if cfg.lang_pairs else []
        self.ras = None
        if cfg.ras_prob > 0 or self.needs_ras_dicts():
            self.ras = AlignedDictionaries.from_option(cfg.ras_dicts)
            if not self.ras.lookup:
                raise ValueError(f"{self.ras_users()} need --ras-dicts")

    def needs_ras_dicts(self) -> bool:
        """Whether a subclass substitutes words even with --ras-prob 0."""
        return False

    def ras_users(self) -> str:
        return "--ras-prob > 0"

    @classmethod
    def setup_task(cls, cfg: MultiLangTokConfig, **kwargs):
        import sentencepiece

        data = Path(cfg.data)
        for name in ("dict.txt", "spm.model"):
            if not (data / name).is_file():
                raise FileNotFoundError(f"{data / name} does not exist (see "
                                        "examples/data/prepare_multilingual.py)")
        dictionary = Dictionary.load(str(data / "dict.txt"))
        dictionary.source = str(data / "dict.txt")
        spm = sentencepiece.SentencePieceProcessor(model_file=str(data / "spm.model"))
        return cls(cfg, dictionary, spm)

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary

    def inference_tags(self):
        """fairseq-interactive / hub: the tags of -s and -t."""
        return self.direction_tags(self.cfg.lang_tok_template)

    def direction(self, split, src, tgt, training):
        src_lines, tgt_lines = read_parallel(Path(self.cfg.data) / f"{split}.{src}-{tgt}", src, tgt)
        return LangTokTranslationDataset(
            f"{split}.{src}-{tgt}", src_lines, tgt_lines, src, tgt, self.dictionary, self.pieces,
            template=self.cfg.lang_tok_template, ras=self.ras if training else None,
            ras_prob=self.cfg.ras_prob if training else 0.0, seed=self.cfg.seed, shuffle=training)

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        if self.cfg.source_lang and self.cfg.target_lang:  # one direction: generation
            self.datasets[split] = self.direction(split, self.cfg.source_lang,
                                                  self.cfg.target_lang, training=False)
            return
        if not self.lang_pairs:
            raise ValueError("give --lang-pairs (training) or -s/-t (one direction)")
        training = split == self.cfg.train_subset
        directions = OrderedDict(
            (f"{s}-{t}", self.direction(split, s, t, training)) for s, t in self.lang_pairs)
        if training:
            directions.update(self.extra_training_directions(split))
        ratios = None
        if training and len(directions) > 1:
            ratios = temperature_ratios([len(d) for d in directions.values()],
                                        self.cfg.sampling_temperature)
            logger.info(f"{split}: sampling ratios (T={self.cfg.sampling_temperature}) " + ", ".join(
                f"{k} {r:.3f}" for k, r in zip(directions, ratios)))
        self.datasets[split] = self.mix(directions, ratios, epoch, split, training)

    def mix(self, directions, ratios, epoch, split, training):
        """The directions as one dataset (``ratios``: sampling probabilities, None to take every
        item once); batches may mix directions. LaSS batches one direction at a time."""
        return SampledMultiDataset(
            directions, sampling_ratios=ratios, seed=self.cfg.seed, epoch=epoch, split=split,
            shared_collater=True, shuffle=training)

    def extra_training_directions(self, split) -> "OrderedDict[str, LangTokTranslationDataset]":
        """More corpora for the training mix, sampled by temperature with the directions."""
        return OrderedDict()

    def max_positions(self):
        return (self.cfg.max_source_positions, self.cfg.max_target_positions)

    def build_bpe(self, args):
        return encoders.build_bpe(Namespace(
            bpe="sentencepiece", sentencepiece_model=str(Path(self.cfg.data) / "spm.model")))


def parse_lang_pairs(text):
    pairs = []
    for item in str(text).split(","):
        langs = item.strip().split("-")
        if len(langs) != 2 or not all(langs):
            raise ValueError(f"--lang-pairs: {item!r} is not SRC-TGT")
        pairs.append(tuple(langs))
    return pairs
