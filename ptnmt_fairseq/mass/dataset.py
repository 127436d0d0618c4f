"""Monolingual text as MASS (or CSP) pre-training items, tokenised on the fly like the rest of the
multilingual family (``common/multilingual/dataset.py``).

An item of a sentence x = x_1..x_m in language L (``noising.py`` builds the sides)::

    source     LANG_TOK_L  x_1 .. [M] [M] [M] .. x_m  </s>    (CSP: the fragment's words code-switched)
    decoder    [M] x_u .. x_{v-1}                            (``span``: K steps)
    positions  u-1 .. v-1                                    (0-based; fairseq adds padding_idx + 1)
    target     x_u .. x_v

The draw depends on (seed, epoch, corpus, sentence) only, never on the batch, so each sentence
gets its own span and every epoch a new one, reproducibly.
"""
import logging
import zlib

import numpy as np
import torch
from fairseq.data import data_utils

from ptnmt_fairseq.common.language_tokens import collate_tagged, lang_tag_index, tag_ids
from ptnmt_fairseq.common.multilingual.dataset import MRASP_LANG_TOK
from ptnmt_fairseq.common.paired_sizes import PairedSizesDataset
from ptnmt_fairseq.mass.noising import (
    MASS_SPAN_START, choose_span, code_switch_encoder_input, decoder_side, mask_encoder_input,
    span_length,
)

logger = logging.getLogger(__name__)

MASK_SYMBOL = "<mask>"
POSITION_PAD = -1  # decoder positions of padded steps (mapped to fairseq's padding position)


def replacement_ids(dictionary, mask_idx: int) -> np.ndarray:
    """Ids a random replacement may take: every symbol but the specials, tags and [M]."""
    excluded = tag_ids(dictionary) | {mask_idx}
    return np.array([i for i in range(dictionary.nspecial, len(dictionary)) if i not in excluded],
                    dtype=np.int64)


class MaskedSpanDataset(PairedSizesDataset):
    """One language's monolingual sentences as MASS items (CSP items with ``lexicon``).

    ``span_ratio``: k / m; ``contiguous``: one span (False: the Discrete ablation);
    ``decoder_input``: ``span`` | ``masked`` | ``feed`` (``noising.decoder_side``); ``lexicon``: a
    ``noising.CodeSwitchLexicon`` turns MASS into CSP (the fragment is chosen among words,
    uniformly placed, and code-switched word by word)."""

    def __init__(self, name, lines, lang, dictionary, pieces, mask_idx, span_ratio=0.5,
                 contiguous=True, decoder_input="span", seed=1, shuffle=True,
                 template=MRASP_LANG_TOK, lexicon=None):
        self.name, self.lang, self.dictionary = name, lang, dictionary
        self.mask_idx, self.span_ratio, self.contiguous = mask_idx, span_ratio, contiguous
        self.decoder_input, self.seed, self.shuffle, self.lexicon = (
            decoder_input, seed, shuffle, lexicon)
        self.tag = lang_tag_index(dictionary, lang, name, template)
        self.random_ids = replacement_ids(dictionary, mask_idx)
        # A sentence needs a visible token beside the masked ones: with fewer than two units
        # (pieces; CSP: words) there is none, so it is left out (microsoft/MASS: min_len 5).
        self.words, self.word_ids, short = [], [], 0
        for line in lines:
            words = line.split()
            word_ids = [np.asarray(pieces.ids((w,)), dtype=np.int64) for w in words]
            units = len(words) if lexicon is not None else sum(len(p) for p in word_ids)
            if units < 2 and span_ratio < 1:
                short += 1
                continue
            self.words.append(words)
            self.word_ids.append(word_ids)
        if short:
            logger.info(f"{name}: {short} of {len(lines)} lines left out (under two "
                        f"{'words' if lexicon is not None else 'tokens'}: nothing would stay "
                        "visible)")
        if not self.words:
            raise ValueError(f"{name}: no line long enough to pre-train on")
        m = np.array([sum(len(p) for p in ids) for ids in self.word_ids])
        self.src_sizes = m + 2
        # Decoder positions reach m whatever the decoder input: the target side's size for
        # --max-target-positions filtering.
        self.tgt_sizes = m + 1
        self.epoch = 1

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.words)

    def rng(self, index):
        return np.random.default_rng([self.seed, self.epoch, index, zlib.crc32(self.name.encode())])

    def tokens(self, index, word_ids=None):
        word_ids = self.word_ids[index] if word_ids is None else word_ids
        return np.concatenate([[self.tag], *word_ids, [self.dictionary.eos()]]).astype(np.int64)

    def __getitem__(self, index):
        rng = self.rng(index)
        tokens = self.tokens(index)
        if self.lexicon is None:
            positions = choose_span(len(tokens) - 2, span_length(len(tokens) - 2, self.span_ratio),
                                    rng, MASS_SPAN_START, self.contiguous)
            source = mask_encoder_input(tokens, positions, rng, self.mask_idx, self.random_ids)
        else:
            positions, source = self.code_switch(index, rng)
        side = decoder_side(tokens, positions, self.decoder_input, self.mask_idx,
                            self.dictionary.pad())
        return {"id": index, "source": torch.from_numpy(source),
                "prev_output_tokens": torch.from_numpy(side.prev_output_tokens),
                "target": torch.from_numpy(side.target),
                "positions": torch.from_numpy(side.positions)}

    def code_switch(self, index, rng):
        """CSP: a fragment of whole words (k of the m words, uniform start), code-switched."""
        word_ids, words = self.word_ids[index], self.words[index]
        fragment = choose_span(len(words), span_length(len(words), self.span_ratio), rng,
                               start_probs=(0.0, 0.0), contiguous=self.contiguous)
        switched_ids, _ = code_switch_encoder_input(
            word_ids, words, fragment - 1, self.lexicon, rng, self.mask_idx, self.random_ids)
        starts = np.cumsum([1] + [len(p) for p in word_ids])  # index of each word's first piece
        positions = np.concatenate([np.arange(starts[w - 1], starts[w - 1] + len(word_ids[w - 1]))
                                    for w in fragment])
        return positions, self.tokens(index, switched_ids)

    def lexicon_coverage(self):
        """Share of the corpus's words that have a lexicon entry (0 without a lexicon)."""
        if self.lexicon is None:
            return 0.0
        found = sum(self.lexicon.entries(w) is not None for words in self.words for w in words)
        return found / sum(len(words) for words in self.words)

    def collater(self, samples):
        if not samples:
            return {}
        pad = self.dictionary.pad()
        target = data_utils.collate_tokens([s["target"] for s in samples], pad)
        batch = collate_tagged(samples, pad, data_utils.collate_tokens(
            [s["prev_output_tokens"] for s in samples], pad), ntokens=int(target.ne(pad).sum()))
        batch["net_input"]["decoder_positions"] = data_utils.collate_tokens(
            [s["positions"] for s in samples], POSITION_PAD)
        batch["target"] = target
        return batch
