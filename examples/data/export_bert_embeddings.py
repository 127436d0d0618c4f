#!/usr/bin/env python3
"""Write a BERT's word-embedding rows in fairseq's text embedding format.

Usage: export_bert_embeddings.py --bert NAME_OR_DIR --dict dict.en.txt OUTPUT

fairseq's ``--encoder-embed-path`` / ``--decoder-embed-path`` read ``token v1 ... vd`` lines
and copy each vector into the row of the same *token string* in the fairseq dictionary, so the
ids need not agree. Only the tokens of ``--dict`` are written, which keeps the file small.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ptnmt_fairseq.common.bert.pretrained import load_bert_model, load_bert_tokenizer  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bert", required=True)
    parser.add_argument("--dict", required=True, help="fairseq dict.*.txt")
    parser.add_argument("output")
    args = parser.parse_args()
    vocab = load_bert_tokenizer(args.bert).get_vocab()
    table = load_bert_model(args.bert).get_input_embeddings().weight.detach()
    tokens = [line.split(" ")[0] for line in Path(args.dict).read_text().splitlines() if line]
    found = [t for t in tokens if t in vocab]
    with open(args.output, "w", encoding="utf-8") as out:
        out.write(f"{len(found)} {table.shape[1]}\n")  # header line, skipped by fairseq
        for token in found:
            vector = " ".join(f"{v:.6f}" for v in table[vocab[token]].tolist())
            out.write(f"{token} {vector}\n")
    print(f"wrote {len(found)}/{len(tokens)} vectors of dim {table.shape[1]} to {args.output}")


if __name__ == "__main__":
    main()
