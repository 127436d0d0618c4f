#!/usr/bin/env python3
"""Write a BERT's vocabulary as a fairseq dict file (``TOKEN 1`` per line, in id order).

Usage: bert_dict.py --bert NAME_OR_DIR OUTPUT

Loaded by ``--task translation_bert`` / ``translation_abnet`` as a ``BertDictionary``, whose
index i is BERT id i (see ptnmt_fairseq/common/bert/dictionary.py).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ptnmt_fairseq.common.bert.dictionary import BertDictionary  # noqa: E402
from ptnmt_fairseq.common.bert.pretrained import bert_vocab_file  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bert", required=True)
    parser.add_argument("output")
    args = parser.parse_args()
    dictionary = BertDictionary.from_vocab_txt(bert_vocab_file(args.bert))
    dictionary.save(args.output)
    print(f"{args.output}: {len(dictionary)} BERT tokens")


if __name__ == "__main__":
    main()
