"""Stage 2 of C-MLM distillation: the teacher's top-K soft labels of a split, computed once.

    python -m ptnmt_fairseq.cmlm_kd.dump_soft_labels DATA --path TEACHER/checkpoint_best.pt \\
        --out DATA/soft_labels.train [--split train] [--k 128] [--max-tokens 8192] [--cpu] [--bf16]

Every target sentence (EOS included) is copied min(n, 7) times with circular masks
(``soft_labels.circular_masks``), so the teacher predicts each position once from the source and
the rest of the target; the top-K logits and ids of each position go into the store, keyed by
fairseq dataset index (format: ``soft_labels.py``). K = 128 is stored and 8 used in training, as
the authors. An empty source or target line, or a pair longer than BERT's 512 positions, stops the
dump with its line number (the authors' preprocessing reuses the previous pair's labels for an
empty line). Prints the teacher's throughput in target tokens per second and the store's bytes
per target token, and writes them to ``OUT/dump.json``.
"""
import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from fairseq import checkpoint_utils

from ptnmt_fairseq.cmlm_kd.soft_labels import (
    STORED_K, SoftLabelError, StoreWriter, circular_masks,
)
from ptnmt_fairseq.cmlm_kd.task import target_prefix
from ptnmt_fairseq.cmlm_kd.teacher import BERT_MAX_POSITIONS, cmlm_input

logger = logging.getLogger("ptnmt_fairseq.cmlm_kd.dump_soft_labels")


def masked_copies(pairs, dictionary, where):
    """(index, input_ids, segments, masked positions of the target, target start) of every copy
    of every pair; ``pairs``: (index, source, target) in dataset order."""
    for index, source, target in pairs:
        content = len(source) - (2 if len(source) and source[0] == dictionary.bos() else 1)
        if len(target) <= 1 or content <= 0:
            side = "target" if len(target) <= 1 else "source"
            raise SoftLabelError(f"{where}: line {index + 1} (sentence {index}) has an empty "
                                 f"{side}: remove it from the data before binarising")
        for positions in circular_masks(len(target)):
            masked = torch.zeros(len(target), dtype=torch.bool)
            masked[positions] = True
            input_ids, segments = cmlm_input(source, target, masked, dictionary.mask(),
                                             dictionary.bos())
            if len(input_ids) > BERT_MAX_POSITIONS:
                raise SoftLabelError(f"{where}: line {index + 1} (sentence {index}) gives "
                                     f"{len(input_ids)} BERT positions, more than "
                                     f"{BERT_MAX_POSITIONS}: filter long pairs out first")
            yield index, input_ids, segments, positions, len(input_ids) - len(target)


def check_pairs(dataset, where: str):
    """Refuse, before the dump starts, the first pair with an empty side or more than BERT's
    512 positions ([CLS] x [SEP] y [SEP]), naming its line and how many there are."""
    source, target = np.asarray(dataset.src_sizes), np.asarray(dataset.tgt_sizes)
    # translation_bert loads sources as [CLS] x [SEP] (prepend_bos_src) and targets as y [SEP]
    empty = np.flatnonzero((target <= 1) | (source <= 2))
    if len(empty):
        first = int(empty[0])
        side = "target" if target[first] <= 1 else "source"
        raise SoftLabelError(f"{where}: line {first + 1} (sentence {first}) has an empty {side} "
                             f"({len(empty)} pairs with an empty side): remove them from the "
                             "data before binarising")
    too_long = np.flatnonzero(source + target > BERT_MAX_POSITIONS)
    if len(too_long):
        first = int(too_long[0])
        raise SoftLabelError(f"{where}: line {first + 1} (sentence {first}) gives "
                             f"{int(source[first] + target[first])} BERT positions, more "
                             f"than {BERT_MAX_POSITIONS} ({len(too_long)} such pairs): filter "
                             "long pairs out first")


def batches(copies, max_tokens):
    batch, longest = [], 0
    for copy in copies:
        longest_if_added = max(longest, len(copy[1]))
        if batch and longest_if_added * (len(batch) + 1) > max_tokens:
            yield batch
            batch, longest_if_added = [], len(copy[1])
        batch.append(copy)
        longest = longest_if_added
    if batch:
        yield batch


@torch.no_grad()
def dump(model, dataset, dictionary, writer: StoreWriter, k: int, max_tokens: int, device,
         where: str, bf16: bool = False):
    pad = dictionary.pad()
    # pairs by length, so that batches hold little padding; the store is keyed by index anyway
    order = np.argsort(dataset.src_sizes + dataset.tgt_sizes, kind="stable")
    pairs = ((int(i), dataset[i]["source"], dataset[i]["target"]) for i in order)
    for batch in batches(masked_copies(pairs, dictionary, where), max_tokens):
        input_ids = torch.full((len(batch), max(len(c[1]) for c in batch)), pad, dtype=torch.long)
        segments = torch.zeros_like(input_ids)
        for row, (_, ids, segs, _, _) in enumerate(batch):
            input_ids[row, :len(ids)], segments[row, :len(segs)] = ids, segs
        predict = torch.zeros_like(input_ids, dtype=torch.bool)
        rows = []
        for row, (index, _, _, positions, start) in enumerate(batch):
            predict[row, start + positions] = True  # positions ascend: row-major order holds
            rows.append(writer.offsets[index] + positions)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids.to(device), segments.to(device),
                           input_ids.ne(pad).long().to(device), predict=predict.to(device))
        top = logits.float().topk(k)
        rows = np.concatenate(rows)
        writer.ids[rows] = top.indices.cpu().numpy().astype(np.int32)
        writer.logits[rows] = top.values.cpu().numpy().astype(np.float16)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="the student's translation_bert data directory")
    parser.add_argument("--path", required=True, help="the C-MLM teacher checkpoint")
    parser.add_argument("--out", required=True, help="the store directory to write")
    parser.add_argument("--split", default="train")
    parser.add_argument("--k", type=int, default=STORED_K, help="logits kept per token (128)")
    parser.add_argument("--max-tokens", type=int, default=8192, help="BERT positions per batch")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--bf16", action="store_true",
                        help="bfloat16 autocast (CPUs with AMX/AVX512-BF16; on a GPU the "
                             "teacher runs in fp16, as the authors' dump)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)s | %(message)s")

    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [args.path], arg_overrides={"data": args.data})
    device = torch.device("cpu" if args.cpu or not torch.cuda.is_available() else "cuda")
    model = models[0].to(device).eval()
    if device.type == "cuda":
        model.half()  # as the authors' dump
    task.load_dataset(args.split)
    dataset = task.dataset(args.split).dataset  # the pairs, without the training masks
    dictionary = task.target_dictionary
    src, tgt = task.cfg.source_lang, task.cfg.target_lang
    prefix = target_prefix(args.data, args.split, src, tgt)
    if args.k > len(dictionary):
        logger.warning(f"--k {args.k} is more than the {len(dictionary)}-token vocabulary: "
                       f"storing {len(dictionary)}")
        args.k = len(dictionary)
    check_pairs(dataset, f"{prefix}.bin")  # before any teacher time is spent
    with StoreWriter(args.out, dataset.tgt_sizes, args.k, teacher=args.path,
                     target_prefix=prefix, source_prefix=target_prefix(args.data, args.split,
                                                                       tgt, src),
                     dictionary_path=Path(args.data) / f"dict.{tgt}.txt") as writer:
        start = time.monotonic()  # the teacher's time: not the checksums, not the commit
        dump(model, dataset, dictionary, writer, args.k, args.max_tokens, device,
             f"{prefix}.bin", bf16=args.bf16 and device.type == "cpu")
        seconds = time.monotonic() - start
        tokens = int(writer.offsets[-1])
        out = writer.commit()
    size = sum(f.stat().st_size for f in out.iterdir())
    stats = {"sentences": len(dataset), "target_tokens": tokens, "seconds": round(seconds, 2),
             "target_tokens_per_second": round(tokens / seconds, 1),
             "bytes_per_target_token": round(size / tokens, 1), "k": args.k,
             "device": str(device), "bf16": bool(args.bf16 and device.type == "cpu")}
    (out / "dump.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(f"dumped {len(dataset)} sentences, {tokens} target tokens in {seconds:.1f} s: "
          f"{stats['target_tokens_per_second']} target tokens/s, "
          f"{stats['bytes_per_target_token']} bytes per target token -> {out}", flush=True)


if __name__ == "__main__":
    main()
