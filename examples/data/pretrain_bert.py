#!/usr/bin/env python3
"""Pre-train a small BERT with a masked-LM head on one language's monolingual text (CPU).

all-MiniLM-L6-v2, the one BERT that loads offline here, is a sentence-embedding model: it has no
MLM head and its token states were tuned for sentence similarity, while AB-Net's decoder, C-MLM's
teacher and CTNMT assume an MLM-pretrained BERT. This script makes one, as BERT does (Devlin et
al., NAACL 2019), with HuggingFace's own pieces:
- a WordPiece vocabulary trained on TEXT (``tokenizers.BertWordPieceTokenizer``; [PAD] [UNK]
  [CLS] [SEP] [MASK] first, as BERT's vocab.txt);
- ``BertForMaskedLM`` of a small ``BertConfig`` (``--layers``, ``--hidden``, ...);
- ``DataCollatorForLanguageModeling`` (15% of the tokens, 80% [MASK] / 10% random / 10% kept);
- AdamW with linear warm-up and decay (``get_linear_schedule_with_warmup``).
OUTDIR then holds config.json, the weights, vocab.txt and the tokenizer files: a local BERT that
``--source-bert`` / ``--target-bert OUTDIR`` (ptnmt_fairseq/common/bert/pretrained.py) loads with
its MLM head. The log has one line per ``--log-every`` steps: ``step N | mlm_loss X | lr Y``.

Usage: pretrain_bert.py TEXT [TEXT...] --out OUTDIR [--vocab-size 8000] [--steps 2000 |
       --minutes M] [--lowercase] ...
"""
import argparse
import logging
import math
import random
import sys
import time
from pathlib import Path

logger = logging.getLogger("pretrain_bert")
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text", nargs="+", type=Path, help="monolingual text, one sentence a line")
    parser.add_argument("--out", required=True, type=Path, help="the BERT's folder")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--lowercase", action="store_true", help="an uncased BERT")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=1024)
    parser.add_argument("--max-length", type=int, default=64,
                        help="WordPiece tokens per sentence, [CLS] and [SEP] included")
    parser.add_argument("--max-positions", type=int, default=128,
                        help="position embeddings (also the longest canvas an AB-Net decoder "
                             "on this BERT can write)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per step")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--minutes", type=float, default=None,
                        help="stop after this much training time instead (whichever first)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup", type=float, default=0.06, help="fraction of --steps")
    parser.add_argument("--mlm-probability", type=float, default=0.15)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.max_length > args.max_positions:
        parser.error(f"--max-length {args.max_length} exceeds --max-positions {args.max_positions}")
    for path in args.text:
        if not path.is_file():
            parser.error(f"{path}: no such text file")
    return args


def read_sentences(paths):
    sentences = []
    for path in paths:
        with open(path, encoding="utf-8", newline="\n") as f:
            sentences += [line.rstrip("\n") for line in f if line.strip()]
    if not sentences:
        raise SystemExit(f"pretrain_bert.py: no sentences in {', '.join(map(str, paths))}")
    return sentences


def train_vocabulary(paths, out, vocab_size, lowercase):
    """WordPiece vocab.txt in ``out`` and the matching ``BertTokenizerFast``."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    wordpiece = BertWordPieceTokenizer(lowercase=lowercase, strip_accents=lowercase)
    wordpiece.train([str(p) for p in paths], vocab_size=vocab_size, special_tokens=SPECIALS,
                    show_progress=False)
    out.mkdir(parents=True, exist_ok=True)
    wordpiece.save_model(str(out))  # out/vocab.txt
    # from the folder, as a BERT is loaded (transformers 5 ignores vocab_file= in the constructor)
    tokenizer = BertTokenizerFast.from_pretrained(str(out), do_lower_case=lowercase,
                                                  strip_accents=lowercase)
    entries = len((out / "vocab.txt").read_text(encoding="utf-8").splitlines())
    if len(tokenizer) != entries:
        raise SystemExit(f"pretrain_bert.py: the tokenizer has {len(tokenizer)} entries, "
                         f"{out / 'vocab.txt'} {entries}")
    return tokenizer


def batches(encoded, batch_size, rng):
    """Endless shuffled batches of tokenised sentences (lists of ids)."""
    order = list(range(len(encoded)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield [encoded[i] for i in order[start:start + batch_size]]


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s | %(message)s", level=logging.INFO, stream=sys.stdout)
    import torch
    from transformers import (BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling,
                              get_linear_schedule_with_warmup)

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    sentences = read_sentences(args.text)
    tokenizer = train_vocabulary(args.text, args.out, args.vocab_size, args.lowercase)
    encoded = tokenizer(sentences, truncation=True, max_length=args.max_length)["input_ids"]
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=args.hidden,
                        num_hidden_layers=args.layers, num_attention_heads=args.heads,
                        intermediate_size=args.intermediate,
                        max_position_embeddings=args.max_positions,
                        pad_token_id=tokenizer.pad_token_id)
    model = BertForMaskedLM(config)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=args.mlm_probability)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(args.warmup * args.steps),
                                               args.steps)
    logger.info(f"{len(sentences)} sentences, vocabulary {len(tokenizer)}, "
                f"{sum(p.numel() for p in model.parameters()):,} parameters")
    model.train()
    start, step, total = time.monotonic(), 0, 0.0
    for step, batch in enumerate(batches(encoded, min(args.batch_size, len(encoded)), rng), 1):
        inputs = collator([{"input_ids": ids} for ids in batch])
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        total += loss.item()
        if step % args.log_every == 0:
            logger.info(f"step {step} | mlm_loss {total / args.log_every:.3f} | "
                        f"lr {schedule.get_last_lr()[0]:.2e}")
            total = 0.0
        out_of_time = args.minutes is not None and time.monotonic() - start > 60 * args.minutes
        if step >= args.steps or out_of_time:
            break
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    logger.info(f"done: {step} steps in {time.monotonic() - start:.0f} s, saved to {args.out}")


if __name__ == "__main__":
    main()
