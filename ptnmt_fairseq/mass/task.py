"""``mass``: MASS and CSP pre-training on monolingual text, then supervised or unsupervised
(back-translation) fine-tuning and generation, all in the multilingual family's data layout
(``common/multilingual/task.py``: DATA/spm.model, DATA/dict.txt with a LANG_TOK_XX per language,
raw text tokenised on the fly).

What a run trains depends on ``--mono-langs`` and ``--mono-objective``:

* ``--mono-langs en,de --mono-objective mass`` (default objective): MASS pre-training on
  DATA/<split>.mono.<lang> (train and valid), the languages mixed by temperature sampling
  (Song et al., ICML 2019). ``--span-ratio`` is k/m (0.5), ``--discrete-mask`` the Discrete and
  ``--decoder-input feed`` the Feed ablation of Table 6; ``--decoder-input masked`` runs the full
  decoder without the span-only trick.
* ``--mono-objective csp``: CSP (Yang et al., EMNLP 2020): the fragment's words are code-switched
  through the word dictionaries of ``--ras-dicts`` (top ``--csp-top-k`` translations).
* ``--mono-objective back_translation``: unsupervised fine-tuning from monolingual text alone,
  with on-the-fly back-translation and no denoising loss (MASS Sec. 4.2; microsoft/MASS
  MASS-unsupNMT ``bt_steps``): each batch of sentences x in language A is translated into the
  other language B by the model itself, greedily, in eval mode and without gradient, and the
  model trains B -> A on (y', x). Batches mix both languages, so both directions train at once.
  Validation reads the parallel ``--lang-pairs`` valid split.
* no ``--mono-langs``: translation of ``--lang-pairs`` (supervised fine-tuning), and
  ``-s SRC -t TGT`` generation, as ``translation_multi_langtok``.

The dictionary gains ``<mask>`` (MASS's [M]) at load time when dict.txt lacks it, in every mode,
so that a pre-trained checkpoint, its fine-tuning and its generation share one dictionary.
"""
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from fairseq import utils
from fairseq.data import data_utils
from fairseq.dataclass import ChoiceEnum
from fairseq.models import BaseFairseqModel
from fairseq.sequence_generator import SequenceGenerator
from fairseq.tasks import register_task

from ptnmt_fairseq.common.language_tokens import collate_tagged, lang_tag_index, shift_right, tag_ids
from ptnmt_fairseq.common.lines import read_lines
from ptnmt_fairseq.common.multilingual.dataset import LangTokTranslationDataset, temperature_ratios
from ptnmt_fairseq.common.multilingual.task import MultiLangTokConfig, MultiLangTokTask
from ptnmt_fairseq.mass.dataset import MASK_SYMBOL, MaskedSpanDataset
from ptnmt_fairseq.mass.noising import DECODER_INPUTS, CodeSwitchLexicon

logger = logging.getLogger(__name__)

MONO_OBJECTIVES = ("mass", "csp", "back_translation")


@dataclass
class MassConfig(MultiLangTokConfig):
    mono_langs: str = field(default="", metadata={
        "help": "languages of the monolingual text DATA/<split>.mono.<lang> trained on with "
                "--mono-objective (empty: translation of --lang-pairs)"})
    mono_objective: ChoiceEnum(MONO_OBJECTIVES) = field(default="mass", metadata={
        "help": "mass: MASS pre-training; csp: CSP pre-training (--ras-dicts lexicon); "
                "back_translation: unsupervised fine-tuning"})
    span_ratio: float = field(default=0.5, metadata={
        "help": "k / m, the masked share of each sentence (MASS Sec. 4.1: 0.5; 1: a language "
                "model, near 0: one token, BERT-like)"})
    discrete_mask: bool = field(default=False, metadata={
        "help": "mask k scattered tokens instead of one span (Table 6, Discrete)"})
    decoder_input: ChoiceEnum(DECODER_INPUTS) = field(default="span", metadata={
        "help": "span: only the masked steps at their positions (the paper's trick); masked: the "
                "whole length with [M] elsewhere; feed: the whole sentence (Table 6, Feed)"})
    csp_top_k: int = field(default=3, metadata={
        "help": "CSP: translations kept per word (Yang et al., 2020: top 3)"})
    bt_max_len_a: float = field(default=1.3, metadata={
        "help": "back-translation: longest output is a * source length + b (microsoft/MASS: "
                "1.3, 5)"})
    bt_max_len_b: int = field(default=5, metadata={"help": "see --bt-max-len-a"})


@register_task("mass", dataclass=MassConfig)
class MassTask(MultiLangTokTask):
    def __init__(self, cfg: MassConfig, dictionary, spm):
        self.mono_langs = [lang.strip() for lang in cfg.mono_langs.split(",") if lang.strip()]
        if MASK_SYMBOL not in dictionary.indices:
            dictionary.add_symbol(MASK_SYMBOL)  # before WordPieceCache and the model read it
        super().__init__(cfg, dictionary, spm)
        self.mask_idx = dictionary.index(MASK_SYMBOL)
        if len(set(self.mono_langs)) != len(self.mono_langs):
            raise ValueError(f"--mono-langs {cfg.mono_langs}: a language is given twice")
        if cfg.mono_objective == "back_translation" and self.mono_langs:
            if len(self.mono_langs) != 2:
                raise ValueError(f"--mono-objective back_translation translates between two "
                                 f"languages; --mono-langs gives {self.mono_langs}")
            if not self.lang_pairs:
                raise ValueError("--mono-objective back_translation validates on parallel text: "
                                 "give --lang-pairs (e.g. en-de,de-en) for the valid split")
            a, b = (lang_tag_index(dictionary, lang, "--mono-langs", cfg.lang_tok_template)
                    for lang in self.mono_langs)
            self.bt_other_language = {a: b, b: a}
            # An undertrained model may write tags or [M]; neither belongs in a synthetic source.
            self.bt_stripped = torch.tensor(sorted(tag_ids(dictionary) | {self.mask_idx}))
        if cfg.mono_objective == "csp":
            if cfg.csp_top_k < 1:
                raise ValueError(f"--csp-top-k {cfg.csp_top_k}: keep at least one translation")
            for lang in self.mono_langs:
                if not self.ras.target_languages(lang):
                    raise ValueError(f"--mono-langs {lang}: no dictionary in --ras-dicts starts "
                                     f"with {lang}, so CSP has no lexicon to switch it with")
        if not 0 < cfg.span_ratio <= 1:
            raise ValueError(f"--span-ratio {cfg.span_ratio}: k/m must be in (0, 1]")
        self._bt_generator = None

    def needs_ras_dicts(self):
        return self.cfg.mono_objective == "csp" and bool(self.mono_langs)

    def ras_users(self):
        return "--mono-objective csp"

    # ---- data --------------------------------------------------------------------------------

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        training = split == self.cfg.train_subset
        pretraining = self.cfg.mono_objective in ("mass", "csp")
        generating = bool(self.cfg.source_lang and self.cfg.target_lang)
        if not self.mono_langs or generating or not (training or pretraining):
            return super().load_dataset(split, epoch, combine, **kwargs)
        corpora = OrderedDict((lang, self.monolingual(split, lang, training))
                              for lang in self.mono_langs)
        ratios = None
        if training and len(corpora) > 1:
            ratios = temperature_ratios([len(d) for d in corpora.values()],
                                        self.cfg.sampling_temperature)
        self.datasets[split] = self.mix(corpora, ratios, epoch, split, training)

    def monolingual(self, split, lang, training):
        path = Path(self.cfg.data) / f"{split}.mono.{lang}"
        lines = read_lines(path)
        if self.cfg.mono_objective == "back_translation":
            return LangTokTranslationDataset(
                path.name, lines, lines, lang, lang, self.dictionary, self.pieces,
                template=self.cfg.lang_tok_template, seed=self.cfg.seed, shuffle=training)
        lexicon = None
        if self.cfg.mono_objective == "csp":
            others = self.ras.target_languages(lang)
            other = others[0]
            if len(others) > 1:
                logger.warning(f"CSP switches {lang} into {other} only: --ras-dicts also has "
                               f"{lang}->{', '.join(others[1:])}, unused (CSP is bilingual)")
            lexicon = CodeSwitchLexicon(self.ras.lookup[lang][other], self.cfg.csp_top_k,
                                        encode=lambda w: self.pieces.ids((w,)))
        dataset = MaskedSpanDataset(
            path.name, lines, lang, self.dictionary, self.pieces, self.mask_idx,
            span_ratio=self.cfg.span_ratio, contiguous=not self.cfg.discrete_mask,
            decoder_input=self.cfg.decoder_input, seed=self.cfg.seed, shuffle=training,
            template=self.cfg.lang_tok_template, lexicon=lexicon)
        if lexicon is not None:
            logger.info(f"{path.name}: CSP lexicon {lang}->{other} covers "
                        f"{100 * dataset.lexicon_coverage():.1f}% of the words, so about "
                        f"{80 * dataset.lexicon_coverage():.1f}% of fragment words are switched "
                        "(the rest of the 80% take [M])")
        return dataset

    # ---- unsupervised fine-tuning: on-the-fly back-translation -------------------------------

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if self.mono_langs and self.cfg.mono_objective == "back_translation":
            sample = self.back_translate(sample, model)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def back_translate(self, sample, model):
        """The batch of (y', x) pairs for the monolingual batch ``sample`` (x in A, tagged
        LANG_TOK_A): y' is the model's greedy translation of x into the other language B, made
        in eval mode under ``torch.no_grad`` (no gradient flows through generation), then the
        model's training mode is restored. Source LANG_TOK_B y' </s>, decoder LANG_TOK_A x."""
        module = model
        while not isinstance(module, BaseFairseqModel):  # DDP: generate with the wrapped model
            module = module.module
        src = sample["net_input"]["src_tokens"]
        pad = self.dictionary.pad()
        other, strip = self.bt_other_language, self.bt_stripped
        sources, targets, ids = [], [], []
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                for tag in src[:, 0].unique().tolist():
                    rows = (src[:, 0] == tag).nonzero()[:, 0]
                    lengths = sample["net_input"]["src_lengths"][rows]
                    batch = {"net_input": {"src_tokens": src[rows][:, :int(lengths.max())],
                                           "src_lengths": lengths}}
                    hypos = self.bt_generator(module).generate(
                        [module], batch, bos_token=other[tag])
                    for row, hypo in zip(rows.tolist(), hypos):
                        tokens = hypo[0]["tokens"].cpu()
                        tokens = tokens[~torch.isin(tokens, strip)]
                        sources.append(torch.cat([tokens.new_tensor([other[tag]]), tokens]))
                        target = sample["target"][row]
                        targets.append((target[target.ne(pad)].cpu(), tag))
                        ids.append(int(sample["id"][row]))
        finally:
            module.train(was_training)
        samples = [{"id": i, "source": s} for i, s in zip(ids, sources)]
        prev = data_utils.collate_tokens([shift_right(t, tag) for t, tag in targets], pad)
        batch = collate_tagged(samples, pad, prev, ntokens=sum(len(t) for t, _ in targets))
        batch["target"] = data_utils.collate_tokens([t for t, _ in targets], pad)
        return utils.apply_to_sample(lambda t: t.to(src.device), batch)

    def bt_generator(self, module):
        if self._bt_generator is None or self._bt_generator.model.single_model is not module:
            self._bt_generator = SequenceGenerator(
                [module], self.dictionary, beam_size=1, max_len_a=self.cfg.bt_max_len_a,
                max_len_b=self.cfg.bt_max_len_b, max_len=self.cfg.max_target_positions - 2)
        return self._bt_generator
