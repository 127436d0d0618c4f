"""Sentence retrieval accuracy on a multi-way test set (mRASP2's measure of a shared space).

Each sentence of language X is encoded with its language token, its encoder states are averaged
over the real tokens, and it retrieves the nearest sentence of language Y by cosine similarity;
top-1 accuracy is the share of sentences whose nearest neighbour is their own translation.
The score of a model is the mean over all ordered pairs X != Y.

Usage::

    python -m ptnmt_fairseq.mrasp2.retrieval DATA --path CKPT --langs en de fr [--prefix test.multiway]
"""
import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

PLUGIN_DIR = Path(__file__).resolve().parents[1]


def sentence_vectors(task, model, lines, lang, batch_size=64):
    from fairseq.data import data_utils

    from ptnmt_fairseq.common.modeling import masked_mean
    from ptnmt_fairseq.common.language_tokens import lang_tag_index

    d = task.dictionary
    tag = lang_tag_index(d, lang, "retrieval", task.cfg.lang_tok_template)
    vectors = []
    for start in range(0, len(lines), batch_size):
        batch = [torch.tensor([tag] + task.pieces.ids(line.split()) + [d.eos()])
                 for line in lines[start:start + batch_size]]
        tokens = data_utils.collate_tokens(batch, d.pad())
        with torch.no_grad():
            out = model.encoder(tokens, src_lengths=torch.tensor([len(b) for b in batch]))
        padding = out["encoder_padding_mask"]
        vectors.append(masked_mean(out["encoder_out"][0], padding[0] if padding else None))
    return F.normalize(torch.cat(vectors), dim=-1)


def top1_accuracy(queries, keys):
    """Share of rows i of ``queries`` whose most similar row of ``keys`` is row i."""
    return float((queries @ keys.t()).argmax(dim=1).eq(torch.arange(len(queries))).float().mean())


def retrieval_accuracy(task, model, data, langs, prefix="test.multiway"):
    from ptnmt_fairseq.common.lines import read_aligned

    lines = dict(zip(langs, read_aligned(*(Path(data) / f"{prefix}.{lang}" for lang in langs))))
    vectors = {lang: sentence_vectors(task, model, lines[lang], lang) for lang in langs}
    pairs = {f"{x}-{y}": top1_accuracy(vectors[x], vectors[y])
             for x, y in itertools.permutations(langs, 2)}
    return sum(pairs.values()) / len(pairs), pairs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--path", required=True, help="checkpoint")
    parser.add_argument("--langs", nargs="+", required=True)
    parser.add_argument("--prefix", default="test.multiway")
    parser.add_argument("--user-dir", default=str(PLUGIN_DIR),
                        help="the fairseq plugin that registered the checkpoint's task and model")
    args = parser.parse_args(argv)

    from fairseq import checkpoint_utils
    from fairseq.utils import import_user_module

    # As fairseq-generate does with --user-dir: the compat fixes and every registration.
    import_user_module(argparse.Namespace(user_dir=args.user_dir))

    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [args.path], arg_overrides={"data": args.data})
    model = models[0].eval()
    mean, pairs = retrieval_accuracy(task, model, args.data, args.langs, args.prefix)
    print(json.dumps({"retrieval_acc": round(100 * mean, 2),
                      "pairs": {k: round(100 * v, 2) for k, v in pairs.items()}}))


if __name__ == "__main__":
    sys.exit(main())
