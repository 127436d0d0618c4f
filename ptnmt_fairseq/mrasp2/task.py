"""``translation_multi_langtok_aa``: the multilingual task plus mRASP2's aligned augmentation.

Pan et al., "Contrastive Learning for Many-to-many Multilingual Neural Machine Translation",
ACL 2021, aligned augmentation: monolingual text x in language L becomes the training pair (RAS(x), x), both
sides in L, and joins the directions' temperature-sampled mix. The substitution probability is
``--aa-prob`` (0.9, PANXiao1994/mRASP2 branch ``new_impl``); the dictionaries are ``--ras-dicts``.
"""
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from fairseq.tasks import register_task

from ptnmt_fairseq.common.lines import read_lines
from ptnmt_fairseq.common.multilingual.dataset import LangTokTranslationDataset
from ptnmt_fairseq.common.multilingual.task import MultiLangTokConfig, MultiLangTokTask

DEFAULT_AA_PROB = 0.9  # mRASP2 new_impl


@dataclass
class AlignedAugmentationConfig(MultiLangTokConfig):
    mono_langs: str = field(default="", metadata={
        "help": "aligned augmentation: languages whose monolingual text DATA/train.mono.<lang> "
                "joins training as (RAS(x), x) pairs"})
    aa_prob: float = field(default=DEFAULT_AA_PROB, metadata={
        "help": "substitution probability of aligned augmentation (mRASP2 new_impl: 0.9)"})


@register_task("translation_multi_langtok_aa", dataclass=AlignedAugmentationConfig)
class AlignedAugmentationTask(MultiLangTokTask):
    def __init__(self, cfg: AlignedAugmentationConfig, dictionary, spm):
        self.mono_langs = [lang for lang in cfg.mono_langs.split(",") if lang.strip()]
        super().__init__(cfg, dictionary, spm)
        for lang in self.mono_langs:
            if not self.ras.target_languages(lang):
                raise ValueError(f"--mono-langs {lang}: no dictionary in --ras-dicts starts with "
                                 f"{lang} (aligned augmentation would leave its text unchanged)")

    def needs_ras_dicts(self):
        return bool(self.mono_langs)

    def ras_users(self):
        return "--ras-prob > 0 and --mono-langs"

    def extra_training_directions(self, split):
        return OrderedDict(
            (f"{lang}-{lang} (AA)", self.aligned_augmentation(split, lang))
            for lang in self.mono_langs)

    def aligned_augmentation(self, split, lang):
        """Monolingual x becomes the pair (RAS(x), x), both sides in ``lang``."""
        path = Path(self.cfg.data) / f"{split}.mono.{lang}"
        lines = read_lines(path)
        return LangTokTranslationDataset(
            str(path.name), lines, lines, lang, lang, self.dictionary, self.pieces,
            template=self.cfg.lang_tok_template, ras=self.ras, ras_prob=self.cfg.aa_prob,
            seed=self.cfg.seed, shuffle=True)
