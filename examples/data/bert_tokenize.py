#!/usr/bin/env python3
"""WordPiece-tokenise raw text with a BERT's own tokenizer, one sentence per line.

Usage: bert_tokenize.py --bert NAME_OR_DIR INPUT OUTPUT [--max-tokens 250] [--basic]

The output holds the BERT's WordPiece strings (``play ##ing``), so a fairseq dictionary built
from it contains BERT tokens only. ``--max-tokens`` truncates (BERT has 512 positions; the
[CLS]/[SEP] and length tokens need room). Empty lines stay empty, so alignment is kept.

``--basic`` writes the BERT's basic tokenisation instead: its normaliser (lower-casing and accent
stripping for an uncased BERT) and its split at spaces and punctuation, but no WordPiece, so no
[UNK]. That is the reference side of tokenised BLEU for WordPiece systems: joining a hypothesis's
``##`` pieces gives the same kind of words (``ptnmt_fairseq.common.scoring --tokenize none``).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ptnmt_fairseq.common.bert.pretrained import load_bert_tokenizer  # noqa: E402
from ptnmt_fairseq.common.lines import read_lines  # noqa: E402


def basic_tokens(tokenizer, text):
    """The words of ``text`` as the BERT's fast tokenizer sees them before WordPiece."""
    backend = tokenizer.backend_tokenizer
    normalised = backend.normalizer.normalize_str(text) if backend.normalizer else text
    return [word for word, _span in backend.pre_tokenizer.pre_tokenize_str(normalised)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bert", required=True, help="HF BERT name or directory")
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--max-tokens", type=int, default=250)
    parser.add_argument("--basic", action="store_true",
                        help="BERT's normalisation and punctuation split only (no WordPiece)")
    args = parser.parse_args()
    tokenizer = load_bert_tokenizer(args.bert)
    lines = read_lines(args.input)
    if args.basic:
        with open(args.output, "w", encoding="utf-8") as out:
            for line in lines:
                out.write(" ".join(basic_tokens(tokenizer, line)) + "\n")
        return
    batch = tokenizer(lines, add_special_tokens=False)["input_ids"]
    with open(args.output, "w", encoding="utf-8") as out:
        for ids in batch:
            out.write(" ".join(tokenizer.convert_ids_to_tokens(ids[: args.max_tokens])) + "\n")


if __name__ == "__main__":
    main()
