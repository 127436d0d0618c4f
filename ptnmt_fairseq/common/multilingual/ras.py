"""Random aligned substitution (RAS): word-level code-switching through bilingual dictionaries.

mRASP (Lin et al., EMNLP 2020) replaces source words found in a bilingual dictionary, each with
probability p, by a translation in another language; mRASP2's aligned augmentation applies the
same to monolingual text, and CSP to one language pair. Substitution happens on words, before
subword splitting, and is a pure function of (seed, epoch, corpus): the same seed gives the same
corpus, and every epoch a new one. ``EpochSubstitutions`` is the one implementation: training
reads it, and so do the tests.

Where the papers are silent the authors' code decides (linzehui/mRASP,
``preprocess/tools/ras/replace_word.py``): one target language is drawn per sentence among those
with a dictionary for the source language, and a translation is drawn uniformly among a word's
entries. p = 0.3 is the mRASP paper's value (that script used 0.15).

Dictionaries are MUSE-style word-pair files, one ``source<TAB>target`` pair per line (a single
space, as in MUSE's own files, is accepted when the line has no tab). Their languages come from
the file name (``en-de.txt``) or a ``en-de:PATH`` prefix. MUSE entries are lower-case, so a
capitalised word is also looked up in lower case and its translation capitalised; punctuation
glued to a word ("file.") is kept around the substitute.
"""
import logging
import re
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ptnmt_fairseq.common.lines import read_lines

logger = logging.getLogger(__name__)

DEFAULT_RAS_PROB = 0.3  # mRASP paper (released code: 0.15)
_EDGES = re.compile(r"^(\W*)(.*?)(\W*)$", re.UNICODE)
_PAIR_NAME = re.compile(r"^([A-Za-z_]+)-([A-Za-z_]+)$")


def parse_dictionary_spec(spec: str) -> Tuple[str, str, Path]:
    """``en-de:PATH`` or ``PATH`` named ``en-de.txt`` -> (src, tgt, path)."""
    head, sep, rest = spec.partition(":")
    if sep and _PAIR_NAME.match(head):
        src, tgt = head.split("-")
        return src, tgt, Path(rest)
    match = _PAIR_NAME.match(Path(spec).stem)
    if not match:
        raise ValueError(f"dictionary {spec!r}: name it SRC-TGT.txt (e.g. en-de.txt) or pass "
                         "SRC-TGT:PATH so its languages are known")
    return match.group(1), match.group(2), Path(spec)


def read_word_dictionary(path) -> Dict[str, List[str]]:
    """word -> its translations (order of the file, duplicates removed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dictionary {path} does not exist")
    table: Dict[str, List[str]] = defaultdict(list)
    phrases = 0
    for line_no, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        fields = line.split("\t") if "\t" in line else line.split(" ")
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            raise ValueError(f"{path}:{line_no}: expected 'source<TAB>target', got {line!r}")
        source, target = fields[0].strip(), fields[1].strip()
        if " " in source or " " in target:
            phrases += 1  # RAS swaps single words
            continue
        if target not in table[source]:
            table[source].append(target)
    if not table:
        raise ValueError(f"{path}: no single-word pairs")
    if phrases:
        logger.info(f"{path}: {len(table)} words; {phrases} multi-word entries not used")
    return dict(table)


class AlignedDictionaries:
    """Bilingual word dictionaries by language pair: ``lookup[src][tgt][word] -> [words]``."""

    def __init__(self, specs: Sequence[str]):
        self.lookup: Dict[str, Dict[str, Dict[str, List[str]]]] = defaultdict(dict)
        for spec in specs:
            src, tgt, path = parse_dictionary_spec(spec)
            table = read_word_dictionary(path)
            merged = self.lookup[src].setdefault(tgt, {})
            for word, translations in table.items():
                merged.setdefault(word, [])
                merged[word].extend(t for t in translations if t not in merged[word])
            logger.info(f"RAS dictionary {src}->{tgt}: {path} ({len(table)} words)")

    @classmethod
    def from_option(cls, option: str):
        return cls([s for s in (option or "").split(",") if s.strip()])

    def target_languages(self, lang: str) -> List[str]:
        return sorted(self.lookup.get(lang, {}))


def lookup_word(word: str, table: Dict[str, List[str]]):
    """(translations, lead, trail, capitalised) of a word in ``table``, or None. Punctuation
    around the word is kept; a capitalised word is also looked up in lower case."""
    lead, core, trail = _EDGES.match(word).groups()
    translations = table.get(core)
    capitalised = False
    if translations is None and core[:1].isupper():
        translations = table.get(core.lower())
        capitalised = True
    if translations is None:
        return None
    return translations, lead, trail, capitalised


class EpochSubstitutions:
    """RAS of a whole corpus for one epoch at a time, drawn in bulk.

    The dictionary look-ups are done once, when the corpus is loaded, and every translation a
    candidate word may take is tokenised then (``encode``: word -> ids). Each epoch draws, from
    (seed, epoch, corpus name), one language per sentence, a replace/keep decision and a
    translation per candidate word, with numpy; the result depends on the seed and the epoch
    only, never on the order in which sentences are read.
    """

    def __init__(self, sentences: Sequence[Sequence[str]], lang: str,
                 dictionaries: AlignedDictionaries, prob: float, seed: int, name: str,
                 encode=None):
        self.prob, self.seed, self.name = prob, seed, name
        self.num_sentences = len(sentences)
        self.languages = dictionaries.target_languages(lang)
        # Per language: sentence ids, word positions and entry numbers of the candidate words.
        self.candidates = []
        self.entries, entry_of = [], {}  # entry: (translations, lead, trail, capitalised)
        for other in self.languages:
            table = dictionaries.lookup[lang][other]
            sent, pos, entry, cache = [], [], [], {}
            for s, words in enumerate(sentences):
                for p, word in enumerate(words):
                    if word not in cache:
                        found = lookup_word(word, table)
                        if found is not None:
                            entry_of[(other, word)] = len(self.entries)
                            self.entries.append(found)
                        cache[word] = entry_of.get((other, word))
                    if cache[word] is not None:
                        sent.append(s)
                        pos.append(p)
                        entry.append(cache[word])
            self.candidates.append(tuple(np.array(a, dtype=np.int64) for a in (sent, pos, entry)))
        # Every option of every entry, formatted and (with ``encode``) tokenised once.
        counts = np.array([len(e[0]) for e in self.entries], dtype=np.int64)
        self.option_start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.option_count = counts
        self.options = [format_translation(e, o) for e in self.entries for o in range(len(e[0]))]
        self.option_ids = None
        if encode is not None:
            encoded = [encode(word) for word in self.options]
            self.option_ids = np.array([i for ids in encoded for i in ids], dtype=np.int64)
            self.option_id_offsets = np.concatenate(
                [[0], np.cumsum([len(ids) for ids in encoded])]).astype(np.int64)
        self.epoch, self.replaced = None, 0

    def draw(self, epoch: int):
        """Draw ``epoch``'s substitutions: arrays ``sent``, ``pos``, ``option`` sorted by
        (sentence, position)."""
        if epoch == self.epoch:
            return
        rng = np.random.default_rng([self.seed, epoch, zlib.crc32(self.name.encode())])
        language = rng.integers(max(len(self.languages), 1), size=self.num_sentences)
        sent, pos, option = [np.zeros(0, dtype=np.int64)] * 3
        for index, (cand_sent, cand_pos, cand_entry) in enumerate(self.candidates):
            chosen = np.flatnonzero((language[cand_sent] == index)
                                    & (rng.random(len(cand_sent)) < self.prob))
            entry = cand_entry[chosen]
            pick = (rng.random(len(chosen)) * self.option_count[entry]).astype(np.int64)
            sent = np.concatenate([sent, cand_sent[chosen]])
            pos = np.concatenate([pos, cand_pos[chosen]])
            option = np.concatenate([option, self.option_start[entry] + pick])
        order = np.lexsort((pos, sent))
        self.sent, self.pos, self.option = sent[order], pos[order], option[order]
        self.first = np.searchsorted(self.sent, np.arange(self.num_sentences + 1))
        self.epoch, self.replaced = epoch, len(sent)

    def changes(self, epoch: int, index: int):
        """[(position, new word), ...] of sentence ``index`` in ``epoch``."""
        self.draw(epoch)
        span = range(self.first[index], self.first[index + 1])
        return [(int(self.pos[j]), self.options[self.option[j]]) for j in span]


def format_translation(entry, option: int) -> str:
    translations, lead, trail, capitalised = entry
    choice = translations[option]
    if capitalised:
        choice = choice[:1].upper() + choice[1:]
    return lead + choice + trail
