"""Many-to-many parallel text with language tokens, tokenised on the fly.

The text stays as words until an item is read, so random aligned substitution (RAS, mRASP) and
aligned augmentation (mRASP2) act on words before sentencepiece splits them (mRASP: "RAS strips
BPE, swaps whole words, re-applies BPE"). Sentences are tokenised once, at load time, and
each epoch splices the pieces of the substituted words into the whole corpus at once (numpy), so
reading a sentence costs the same with RAS on or off. sentencepiece never lets a piece
cross a space, so word-by-word encoding equals encoding the sentence.

An item of direction src->tgt is (mRASP style; the tokens are ``LANG_TOK_XX`` by default)::

    source   LANG_TOK_SRC  x_1 ... x_n  </s>
    decoder  LANG_TOK_TGT  y_1 ... y_m            (the tag in place of fairseq's bos)
    target   y_1 ... y_m  </s>

so the target-language token is given to the decoder, never predicted: the forced first token
of mRASP's ``--lang-prefix-tok`` without the option, and no off-target first step.
"""
import logging
from typing import Dict, List, Optional

import numpy as np
import torch
from fairseq.data import data_utils

from ptnmt_fairseq.common.multilingual.ras import AlignedDictionaries, EpochSubstitutions
from ptnmt_fairseq.common.language_tokens import collate_tagged, lang_tag_index, shift_right
from ptnmt_fairseq.common.lines import read_aligned
from ptnmt_fairseq.common.paired_sizes import PairedSizesDataset

logger = logging.getLogger(__name__)

MRASP_LANG_TOK = "LANG_TOK_{LANG}"


def read_parallel(prefix, src, tgt):
    """Lines of PREFIX.SRC and PREFIX.TGT; an error names both files when they disagree."""
    return read_aligned(f"{prefix}.{src}", f"{prefix}.{tgt}")


class WordPieceCache:
    """sentencepiece ids of each word, computed once."""

    def __init__(self, spm_processor, dictionary):
        self.spm, self.dictionary = spm_processor, dictionary
        self.cache: Dict[str, List[int]] = {}

    def ids(self, words) -> List[int]:
        out = []
        for word in words:
            ids = self.cache.get(word)
            if ids is None:
                pieces = self.spm.encode(word, out_type=str)
                ids = [self.dictionary.index(p) for p in pieces]
                self.cache[word] = ids
            out.extend(ids)
        return out


class LangTokTranslationDataset(PairedSizesDataset):
    """One direction of raw parallel text; RAS on the source words when ``ras_prob`` > 0."""

    def __init__(self, name, src_lines, tgt_lines, src_lang, tgt_lang, dictionary, pieces,
                 template=MRASP_LANG_TOK, ras: Optional[AlignedDictionaries] = None,
                 ras_prob=0.0, seed=1, shuffle=True):
        self.name, self.src_lang, self.tgt_lang = name, src_lang, tgt_lang
        self.src_lines, self.tgt_lines = src_lines, tgt_lines
        self.dictionary, self.pieces = dictionary, pieces
        self.epoch, self.shuffle = 1, shuffle
        where = f"{name} ({src_lang}->{tgt_lang})"
        self.src_tag = lang_tag_index(dictionary, src_lang, where, template)
        self.tgt_tag = lang_tag_index(dictionary, tgt_lang, where, template)
        eos = dictionary.eos()
        # Sources as one flat id array; word k of sentence i spans
        # src_flat[word_start[word_off[i] + k] : word_end[word_off[i] + k]].
        ids, offsets, word_start, word_end, word_off = [], [0], [], [], [0]
        for line in src_lines:
            ids.append(self.src_tag)
            for word in line.split():
                word_start.append(len(ids))
                ids.extend(pieces.ids((word,)))
                word_end.append(len(ids))
            ids.append(eos)
            offsets.append(len(ids))
            word_off.append(len(word_start))
        self.src_flat, self.src_off = np.array(ids, dtype=np.int64), np.array(offsets)
        self.word_start, self.word_end = np.array(word_start, dtype=np.int64), np.array(word_end)
        self.word_off = np.array(word_off, dtype=np.int64)
        self.tgt_ids = [pieces.ids(line.split()) + [eos] for line in tgt_lines]
        # Sizes of the unsubstituted text; RAS changes a length by a few pieces at most.
        self.src_sizes = np.diff(self.src_off)
        self.tgt_sizes = np.array([len(ids) for ids in self.tgt_ids])
        self.ras, self.epoch_ids = None, None
        if ras is not None and ras_prob > 0:
            self.ras = EpochSubstitutions([line.split() for line in src_lines], src_lang, ras,
                                          ras_prob, seed, name, encode=lambda w: pieces.ids((w,)))

    def set_epoch(self, epoch):
        self.epoch = epoch

    @property
    def replaced_words(self):
        """Words substituted in the current epoch (over the whole corpus)."""
        if self.ras is None:
            return 0
        self.ras.draw(self.epoch)
        return self.ras.replaced

    def source_words(self, index):
        words = self.src_lines[index].split()
        if self.ras is not None:
            for position, word in self.ras.changes(self.epoch, index):
                words[position] = word
        return words

    def sources(self):
        """(flat ids, offsets) of this epoch's sources: the substituted words' pieces spliced
        in place of the original words' pieces for the whole corpus at once (numpy)."""
        if self.ras is None:
            return self.src_flat, self.src_off
        if self.epoch_ids is not None and self.epoch_ids[0] == self.epoch:
            return self.epoch_ids[1:]
        ras = self.ras
        ras.draw(self.epoch)
        word = self.word_off[ras.sent] + ras.pos
        cut_start, cut_end = self.word_start[word], self.word_end[word]
        new_start = ras.option_id_offsets[ras.option] + len(self.src_flat)
        new_len = ras.option_id_offsets[ras.option + 1] - ras.option_id_offsets[ras.option]
        # Segments: kept original text before each substituted word, the substitute, the rest.
        keep_start = np.concatenate([[0], cut_end])
        keep_len = np.concatenate([cut_start, [len(self.src_flat)]]) - keep_start
        seg_start = np.empty(2 * len(word) + 1, dtype=np.int64)
        seg_len = np.empty_like(seg_start)
        seg_start[0::2], seg_len[0::2] = keep_start, keep_len
        seg_start[1::2], seg_len[1::2] = new_start, new_len
        buffer = np.concatenate([self.src_flat, ras.option_ids])
        before = np.cumsum(seg_len) - seg_len
        flat = buffer[np.repeat(seg_start - before, seg_len) + np.arange(seg_len.sum())]
        growth = np.bincount(ras.sent, weights=new_len - (cut_end - cut_start),
                             minlength=len(self)).astype(np.int64)
        offsets = self.src_off + np.concatenate([[0], np.cumsum(growth)])
        self.epoch_ids = (self.epoch, flat, offsets)
        return flat, offsets

    def __getitem__(self, index):
        flat, offsets = self.sources()
        return {"id": index, "source": torch.from_numpy(flat[offsets[index]:offsets[index + 1]]),
                "target": torch.tensor(self.tgt_ids[index]), "tgt_tag": self.tgt_tag}

    def __len__(self):
        return len(self.src_lines)

    def collater(self, samples):
        if not samples:
            return {}
        pad = self.dictionary.pad()
        targets = [s["target"] for s in samples]
        prev = data_utils.collate_tokens(
            [shift_right(t, s["tgt_tag"]) for t, s in zip(targets, samples)], pad)
        batch = collate_tagged(samples, pad, prev, ntokens=sum(len(t) for t in targets))
        batch["target"] = data_utils.collate_tokens(targets, pad)
        return batch


def temperature_ratios(sizes, temperature: float):
    """Sampling probability of each corpus: q_i ∝ (n_i / N)^(1/T) (T=1: proportional)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    weights = (sizes / sizes.sum()) ** (1.0 / temperature)
    return (weights / weights.sum()).tolist()
