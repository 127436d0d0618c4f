#!/usr/bin/env python3
"""WordPiece-tokenise raw text with a BERT's own tokenizer, one sentence per line.

Usage: bert_tokenize.py --bert NAME_OR_DIR INPUT OUTPUT [--max-tokens 250]

The output holds the BERT's WordPiece strings (``play ##ing``), so a fairseq dictionary built
from it contains BERT tokens only. ``--max-tokens`` truncates (BERT has 512 positions; the
[CLS]/[SEP] and length tokens need room). Empty lines stay empty, so alignment is kept.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ptnmt_fairseq.common.bert.pretrained import load_bert_tokenizer  # noqa: E402
from ptnmt_fairseq.common.lines import read_lines  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bert", required=True, help="HF BERT name or directory")
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--max-tokens", type=int, default=250)
    args = parser.parse_args()
    tokenizer = load_bert_tokenizer(args.bert)
    lines = read_lines(args.input)
    batch = tokenizer(lines, add_special_tokens=False)["input_ids"]
    with open(args.output, "w", encoding="utf-8") as out:
        for ids in batch:
            out.write(" ".join(tokenizer.convert_ids_to_tokens(ids[: args.max_tokens])) + "\n")


if __name__ == "__main__":
    main()
