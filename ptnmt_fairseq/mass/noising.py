"""MASS's masked fragment (Song et al., ICML 2019, Sec. 2.2 and 4.1) and CSP's code-switched
fragment (Yang et al., EMNLP 2020, Sec. 3), one sentence at a time, with numpy.

A sentence is held as ``tokens`` = [tag, x_1, ..., x_m, </s>] (the language token of the
multilingual family at index 0), so x_p sits at index p and only indices 1..m can be masked; the
tag and </s> never are ([MU]: microsoft/MASS, MASS-unsupNMT/src/trainer.py, mask_sent).

The decoder predicts the masked tokens x_p, p in the fragment, in order. Step p reads fairseq
decoder position p - 1, the position at which a fine-tuned decoder predicts the p-th target
token (its input there is the tag for p = 1), so pre-training and fine-tuning agree on positions.
Its input follows the paper's Figure 1: x_{p-1} when x_{p-1} is masked too (the fragment, shifted
right) and [M] otherwise, i.e. [M], x_u, ..., x_{v-1} for the span x_u..x_v. microsoft/MASS feeds
x_{u-1} instead of the first [M] (its issues #19/#96: "almost the same, easier to code").
"""
from typing import NamedTuple, Optional, Sequence

import numpy as np

from ptnmt_fairseq.common.multilingual.ras import format_translation, lookup_word

MASS_SPAN_START = (0.2, 0.2)  # P(start at x_1), P(end at x_m); else uniform ([MU] mask_start)
ENCODER_NOISE = (0.8, 0.1)  # P([M]), P(random token); else unchanged (MASS Sec. 4.1, after BERT)
DECODER_INPUTS = ("span", "masked", "feed")


def span_length(m: int, ratio: float) -> int:
    """k = round(ratio * m), kept in [1, m - 1] so that one token stays visible (ratio 1 gives
    k = m: a language model, Figure 2b; a ratio below 1/m gives k = 1, a BERT-like masked LM,
    Figure 2a). From each sentence's own length m (the XLM-based code takes one k from the
    batch's padded length, microsoft/MASS issue #64)."""
    if m < 1:
        raise ValueError("a sentence needs at least one token to mask")
    if ratio >= 1:
        return m
    return int(min(max(int(ratio * m + 0.5), 1), max(m - 1, 1)))


def choose_span(m: int, k: int, rng: np.random.Generator,
                start_probs: Sequence[float] = MASS_SPAN_START, contiguous: bool = True):
    """Sorted positions (1..m) of the k masked tokens. Contiguous: the span starts at x_1 with
    probability start_probs[0], ends at x_m with start_probs[1], and starts uniformly among the
    m - k + 1 starts otherwise; ``start_probs=(0, 0)`` is CSP's uniform start. Not contiguous:
    k distinct positions drawn uniformly (the "Discrete" ablation of Table 6)."""
    if not contiguous:
        return np.sort(rng.choice(m, size=k, replace=False)) + 1
    starts = m - k + 1
    draw = rng.random()
    if draw < start_probs[0]:
        start = 1
    elif draw < start_probs[0] + start_probs[1]:
        start = starts
    else:
        start = int(rng.integers(1, starts + 1))
    return np.arange(start, start + k)


def noise_decisions(count: int, rng: np.random.Generator, probs=ENCODER_NOISE):
    """(replace, random) boolean arrays over ``count`` items: replace with probability probs[0]
    (by [M], or CSP's translation), a random token with probs[1], unchanged otherwise."""
    draw = rng.random(count)
    return draw < probs[0], (draw >= probs[0]) & (draw < probs[0] + probs[1])


def mask_encoder_input(tokens: np.ndarray, positions: np.ndarray, rng: np.random.Generator,
                       mask_idx: int, random_ids: np.ndarray, probs=ENCODER_NOISE):
    """The encoder's copy of ``tokens`` with each masked position [M] / random / unchanged.
    ``random_ids`` holds the ids a random replacement may take (never a special symbol, a
    language tag or [M])."""
    out = tokens.copy()
    replace, random = noise_decisions(len(positions), rng, probs)
    out[positions[replace]] = mask_idx
    out[positions[random]] = rng.choice(random_ids, size=int(random.sum()))
    return out


class DecoderSide(NamedTuple):
    prev_output_tokens: np.ndarray  # decoder input
    target: np.ndarray  # predicted tokens, pad where no loss is taken
    positions: np.ndarray  # 0-based decoder positions (fairseq's position p is index p - 1)


def decoder_side(tokens: np.ndarray, positions: np.ndarray, mode: str, mask_idx: int,
                 pad: int) -> DecoderSide:
    """The decoder's input, target and positions for the masked ``positions`` of ``tokens``.

    ``mode``:
      * ``span`` (the paper's trick, Sec. 4.1): only the K masked steps are fed, at their
        original positions; K inputs, K targets.
      * ``masked``: the whole length m + 1 with [M] at the steps outside the fragment and pad
        (no loss) as their targets, Figure 1 as drawn; the same loss as ``span`` at about twice
        the decoder's cost.
      * ``feed``: the whole sentence shifted right is fed (no decoder masking), the loss still on
        the fragment only: the "Feed" ablation of Table 6.
    """
    if mode not in DECODER_INPUTS:
        raise ValueError(f"decoder input {mode!r}: one of {DECODER_INPUTS}")
    masked = np.zeros(len(tokens), dtype=bool)
    masked[positions] = True
    inputs = np.where(masked[positions - 1], tokens[positions - 1], mask_idx)
    if mode == "span":
        return DecoderSide(inputs, tokens[positions].copy(), positions - 1)
    length = len(tokens) - 1  # steps 0..m, predicting x_1..x_m and </s>
    target = np.full(length, pad, dtype=tokens.dtype)
    target[positions - 1] = tokens[positions]
    if mode == "feed":
        prev = tokens[:-1].copy()
    else:
        prev = np.full(length, mask_idx, dtype=tokens.dtype)
        prev[positions - 1] = inputs
    return DecoderSide(prev, target, np.arange(length))


class CodeSwitchLexicon:
    """CSP's probabilistic translation lexicon for one language: word -> up to ``top_k``
    translations, sampled uniformly (the paper keeps the top 3 of a mapped-embedding lexicon
    and samples; its weights are not given). ``entries(word)`` are the translations' token ids,
    tokenised once; ``None`` for a word outside the lexicon. Built from the multilingual
    family's word dictionaries (``common/multilingual/ras.py``): a capitalised word is also
    looked up in lower case and its translation capitalised, and punctuation around it kept."""

    def __init__(self, table, top_k: int, encode):
        self.table, self.top_k, self.encode, self._cache = table, top_k, encode, {}

    def entries(self, word: str) -> Optional[list]:
        if word not in self._cache:
            found = lookup_word(word, self.table)
            if found is None:
                self._cache[word] = None
            else:
                translations, lead, trail, capitalised = found
                entry = (translations[: self.top_k], lead, trail, capitalised)
                self._cache[word] = [np.asarray(self.encode(format_translation(entry, o)), dtype=np.int64)
                                     for o in range(len(entry[0]))]
        return self._cache[word]


def code_switch_encoder_input(word_ids: Sequence[np.ndarray], words: Sequence[str],
                              fragment: np.ndarray, lexicon: CodeSwitchLexicon,
                              rng: np.random.Generator, mask_idx: int, random_ids: np.ndarray,
                              probs=ENCODER_NOISE):
    """CSP's encoder input (Yang et al., 2020, Sec. 3.1) as a list of id arrays, one per word.

    Each fragment word (``fragment``: word indices) is replaced by a translation sampled from the
    lexicon with probability probs[0], by random tokens with probs[1] (one per piece), and left
    unchanged otherwise. A fragment word outside the lexicon takes [M] (one per piece) where a
    translation would have gone: the fragment stays hidden from the encoder as in MASS, and such
    words do not count as switched. Returns (pieces, words switched)."""
    out = list(word_ids)
    replace, random = noise_decisions(len(fragment), rng, probs)
    switched = 0
    for w, rep, rnd in zip(fragment, replace, random):
        if rep:
            options = lexicon.entries(words[w])
            if options:
                out[w] = options[int(rng.integers(len(options)))]
                switched += 1
            else:
                out[w] = np.full(len(word_ids[w]), mask_idx, dtype=np.int64)
        elif rnd:
            out[w] = rng.choice(random_ids, size=len(word_ids[w]))
    return out, switched
