"""A fairseq ``Dictionary`` whose index *i* is BERT vocabulary id *i*.

fairseq's ``Dictionary`` always puts ``<s> <pad> </s> <unk>`` at ids 0-3 and sorts the rest by
frequency, so its ids never match a BERT's embedding rows. ``BertDictionary`` is built from the
BERT's own ``vocab.txt`` (line *i* = id *i*), adds no symbols, and maps fairseq's roles onto
BERT's special tokens: bos = [CLS], pad = [PAD], eos = [SEP], unk = [UNK], plus mask = [MASK].
Special tokens are looked up by string, never by number (bert-base-german-cased has [MASK] = 5,
bert-base-uncased has 103).

Data are binarised with it by ``fairseq-preprocess --user-dir ptnmt_fairseq --task
translation_bert --srcdict SRC_BERT_DICT --tgtdict TGT_BERT_DICT`` (see
``examples/data/bert_binarize.sh``); ``check_matches_bert`` and ``check_binarized_ids`` refuse data
whose ids were produced with any other dictionary.
"""
from pathlib import Path

import numpy as np
from fairseq.data import Dictionary

from ptnmt_fairseq.common.lines import read_lines

SPECIAL_TOKENS = {"bos": "[CLS]", "pad": "[PAD]", "eos": "[SEP]", "unk": "[UNK]", "mask": "[MASK]"}


class BertDictionary(Dictionary):
    def __init__(self, tokens, source="<memory>"):
        super().__init__(
            bos=SPECIAL_TOKENS["bos"], pad=SPECIAL_TOKENS["pad"], eos=SPECIAL_TOKENS["eos"],
            unk=SPECIAL_TOKENS["unk"], add_special_symbols=False,
        )
        self.source = str(source)
        for line_no, token in enumerate(tokens, 1):
            if not token or any(c.isspace() for c in token):
                raise ValueError(f"{source}:{line_no}: malformed vocabulary entry {token!r}")
            if token in self.indices:
                raise ValueError(
                    f"{source}:{line_no}: duplicate token {token!r} (first at line "
                    f"{self.indices[token] + 1}); ids would no longer match BERT's rows"
                )
            self.indices[token] = len(self.symbols)
            self.symbols.append(token)
            self.count.append(1)
        missing = [t for t in SPECIAL_TOKENS.values() if t not in self.indices]
        if missing:
            raise ValueError(f"{source}: no {' '.join(missing)} token; is this a BERT vocab.txt?")
        self.bos_index = self.indices[SPECIAL_TOKENS["bos"]]
        self.pad_index = self.indices[SPECIAL_TOKENS["pad"]]
        self.eos_index = self.indices[SPECIAL_TOKENS["eos"]]
        self.unk_index = self.indices[SPECIAL_TOKENS["unk"]]
        self.mask_index = self.indices[SPECIAL_TOKENS["mask"]]
        self.nspecial = 0  # every id is a BERT id: ``save`` writes them all, in id order

    def mask(self):
        return self.mask_index

    @classmethod
    def from_vocab_txt(cls, path):
        """A BERT ``vocab.txt``: one token per line, the line number is the id."""
        path = Path(path)
        lines = read_lines(path)
        return cls(lines, source=path)

    @classmethod
    def load(cls, f, add_special_symbols=True):
        """A fairseq ``dict.txt`` (``token count`` lines) as written by ``save``."""
        path = Path(f)
        tokens = []
        for line_no, line in enumerate(read_lines(path), 1):
            fields = line.split(" ")
            if len(fields) != 2 or not fields[1].isdigit():
                raise ValueError(
                    f"{path}:{line_no}: expected 'TOKEN COUNT', got {line!r}. Build BERT "
                    "dictionaries with examples/data/bert_binarize.sh"
                )
            tokens.append(fields[0])
        return cls(tokens, source=path)


def check_matches_bert(dictionary, bert_vocab_path, role="source"):
    """Raise unless ``dictionary`` lists exactly the BERT's vocabulary, in id order."""
    bert = BertDictionary.from_vocab_txt(bert_vocab_path)
    data_source = getattr(dictionary, "source", "the data dictionary")
    if list(dictionary.symbols) == list(bert.symbols):
        return
    first_diff = next(
        (i for i, (a, b) in enumerate(zip(dictionary.symbols, bert.symbols)) if a != b),
        min(len(dictionary), len(bert)),
    )
    ours = dictionary.symbols[first_diff] if first_diff < len(dictionary) else "<end>"
    theirs = bert.symbols[first_diff] if first_diff < len(bert) else "<end>"
    raise ValueError(
        f"{role} vocabulary mismatch: {data_source} ({len(dictionary)} tokens) vs the {role} "
        f"BERT's {bert_vocab_path} ({len(bert)} tokens); first difference at id {first_diff}: "
        f"{ours!r} vs {theirs!r}. Re-binarise the data with this BERT "
        "(examples/data/bert_binarize.sh); training on misaligned ids would be silently wrong."
    )


def check_binarized_ids(dataset, dictionary, path, sample=200):
    """Refuse a binarised split whose ids came from another dictionary.

    fairseq-preprocess appends eos to every sentence. Data binarised with fairseq's default
    Dictionary end in id 2, so they are caught even when the dict file itself looks right.
    """
    n = min(len(dataset), sample)
    last_ids = np.array([int(dataset[i][-1]) for i in range(n)], dtype=np.int64)
    bad = np.nonzero(last_ids != dictionary.eos())[0]
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"{path}: sentence {i} ends in id {last_ids[i]} ({dictionary[last_ids[i]]!r}), not "
            f"[SEP] = {dictionary.eos()}: these ids were binarised with another dictionary. "
            "Re-run fairseq-preprocess with --user-dir ptnmt_fairseq --task translation_bert "
            "(examples/data/bert_binarize.sh)."
        )
    if len(dataset) and max(int(dataset[i].max()) for i in range(n)) >= len(dictionary):
        raise ValueError(f"{path}: ids beyond the {len(dictionary)}-token vocabulary")
