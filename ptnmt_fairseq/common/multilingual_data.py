"""Many-to-many parallel text with language tokens, tokenised on the fly.

The text stays as words until an item is read, so random aligned substitution (RAS, mRASP) and
aligned augmentation (mRASP2) act on words before sentencepiece splits them (mRASP: "RAS strips
BPE, swaps whole words, re-applies BPE"). Plain sentences are tokenised once, at load time;
a substituted sentence is re-tokenised from cached word pieces when it is read. sentencepiece never lets a piece
cross a space, so word-by-word encoding equals encoding the sentence.

An item of direction src->tgt is (mRASP style; the tokens are ``LANG_TOK_XX`` by default)::

    source   LANG_TOK_SRC  x_1 ... x_n  </s>
    decoder  LANG_TOK_TGT  y_1 ... y_m            (the tag in place of fairseq's bos)
    target   y_1 ... y_m  </s>

so the target-language token is given to the decoder, never predicted: the forced first token
of mRASP's ``--lang-prefix-tok`` without the option, and no off-target first step.
"""
import logging
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from fairseq.data import FairseqDataset, data_utils

from ptnmt_fairseq.common.aligned_substitution import AlignedDictionaries, EpochSubstitutions
from ptnmt_fairseq.common.language_tokens import lang_tag_index, shift_right

logger = logging.getLogger(__name__)

MRASP_LANG_TOK = "LANG_TOK_{LANG}"


def read_lines(path) -> List[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return path.read_text(encoding="utf-8").splitlines()


def read_parallel(prefix, src, tgt):
    """Lines of PREFIX.SRC and PREFIX.TGT; an error names both files when they disagree."""
    src_lines, tgt_lines = read_lines(f"{prefix}.{src}"), read_lines(f"{prefix}.{tgt}")
    if len(src_lines) != len(tgt_lines):
        raise ValueError(f"{prefix}.{src} has {len(src_lines)} lines but {prefix}.{tgt} has "
                         f"{len(tgt_lines)}: the sides are not aligned")
    return src_lines, tgt_lines


class WordPieceCache:
    """sentencepiece ids of each word, computed once."""

    def __init__(self, spm_processor, dictionary):
        self.spm, self.dictionary = spm_processor, dictionary
        self.cache: Dict[str, List[int]] = {}
        self.unknown = 0

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


class LangTokTranslationDataset(FairseqDataset):
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
        self.src_ids, self.word_starts = [], []  # word_starts[i][k]: where word k's pieces begin
        for line in src_lines:
            ids, starts = [self.src_tag], []
            for word in line.split():
                starts.append(len(ids))
                ids.extend(pieces.ids((word,)))
            starts.append(len(ids))
            self.src_ids.append(ids + [eos])
            self.word_starts.append(starts)
        self.tgt_ids = [pieces.ids(line.split()) + [eos] for line in tgt_lines]
        # Sizes of the unsubstituted text; RAS changes a length by a few pieces at most.
        self.src_sizes = np.array([len(ids) for ids in self.src_ids])
        self.tgt_sizes = np.array([len(ids) for ids in self.tgt_ids])
        self.ras = None
        if ras is not None and ras_prob > 0:
            self.ras = EpochSubstitutions([line.split() for line in src_lines], src_lang, ras,
                                          ras_prob, seed, name)

    def set_epoch(self, epoch):
        self.epoch = epoch

    @property
    def replaced_words(self):
        """Words substituted in the current epoch (over the whole corpus)."""
        if self.ras is None:
            return 0
        self.ras.draw(self.epoch)
        return self.ras.replaced

    def substitutions(self, index):
        return self.ras.changes(self.epoch, index) if self.ras is not None else None

    def source_words(self, index):
        words = self.src_lines[index].split()
        for position, word in self.substitutions(index) or ():
            words[position] = word
        return words

    def __getitem__(self, index):
        source = self.src_ids[index]
        changes = self.substitutions(index)
        if changes:  # splice the new words' pieces in place of the old ones
            starts, spliced, done = self.word_starts[index], [], 0
            for position, word in sorted(changes):
                spliced += source[done:starts[position]] + self.pieces.ids((word,))
                done = starts[position + 1]
            source = spliced + source[done:]
        return {"id": index, "source": torch.tensor(source),
                "target": torch.tensor(self.tgt_ids[index]), "tgt_tag": self.tgt_tag}

    def __len__(self):
        return len(self.src_lines)

    def collater(self, samples):
        if not samples:
            return {}
        pad = self.dictionary.pad()
        targets = [s["target"] for s in samples]
        return {
            "id": torch.tensor([s["id"] for s in samples]),
            "nsentences": len(samples),
            "ntokens": sum(len(t) for t in targets),
            "net_input": {
                "src_tokens": data_utils.collate_tokens([s["source"] for s in samples], pad),
                "src_lengths": torch.tensor([len(s["source"]) for s in samples]),
                "prev_output_tokens": data_utils.collate_tokens(
                    [shift_right(t, s["tgt_tag"]) for t, s in zip(targets, samples)], pad),
            },
            "target": data_utils.collate_tokens(targets, pad),
        }

    def num_tokens(self, index):
        return int(max(self.src_sizes[index], self.tgt_sizes[index]))

    def num_tokens_vec(self, indices):
        return np.maximum(self.src_sizes[indices], self.tgt_sizes[indices])

    def size(self, index):
        return (int(self.src_sizes[index]), int(self.tgt_sizes[index]))

    @property
    def sizes(self):
        return np.vstack((self.src_sizes, self.tgt_sizes)).T

    def ordered_indices(self):
        order = np.random.permutation(len(self)) if self.shuffle else np.arange(len(self))
        order = order[np.argsort(self.tgt_sizes[order], kind="mergesort")]
        return order[np.argsort(self.src_sizes[order], kind="mergesort")]

    def filter_indices_by_size(self, indices, max_sizes):
        return data_utils.filter_paired_dataset_indices_by_size(
            self.src_sizes, self.tgt_sizes, indices, max_sizes)


def temperature_ratios(sizes, temperature: float):
    """Sampling probability of each corpus: q_i ∝ (n_i / N)^(1/T) (T=1: proportional)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    weights = (sizes / sizes.sum()) ** (1.0 / temperature)
    return (weights / weights.sum()).tolist()
