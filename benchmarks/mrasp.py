#!/usr/bin/env python3
"""mRASP / mRASP2 benchmark on gettext en<->de, en<->fr (CPU): m-Transformer vs mRASP vs mRASP2.

In one run of recipes/mrasp2/run.sh on the same data, dictionaries and seed, three many-to-many
models train on en-de, de-en, en-fr, fr-en with the same budget (``MAX_UPDATE`` updates, the same
batch size, learning rate and inverse_sqrt schedule, the same 2+2-layer d128 Transformer):
  - ``baseline``: the plain multilingual Transformer (no RAS, label-smoothed CE);
  - ``mrasp``: random aligned substitution on the training sources (RAS p=0.3, FreeDict
    en-de/en-fr/de-en/fr-en word dictionaries), label-smoothed CE;
  - ``mrasp2``: RAS + aligned augmentation (AA p=0.9 on monolingual de/fr: the non-English side
    of the en-de/en-fr training pairs) + the contrastive loss (lambda 1, tau 0.1).
Measured for each system:
1. BLEU (case-sensitive detokenised sacreBLEU, sacrebleu.corpus_bleu on the D-/T- lines of
   fairseq-generate, beam 5, checkpoint_best.pt) on the first ``MAX_EVAL`` lines of the test set
   of each supervised direction, and of the zero-shot directions de-fr, fr-de (multi-way set).
2. Sentence retrieval top-1 accuracy (ptnmt_fairseq.mrasp2.retrieval, en de fr, multi-way set).
3. Training words/s and train_wall from the end-of-epoch ``train`` line of each log.
And, in-process, the data-loading cost of RAS: the task built with and without RAS (the same data
and dictionaries), whole epochs of ``task.get_batch_iterator(train, max_tokens=4000, seed=1,
epoch=e).next_epoch_itr(shuffle=True)`` summing ``batch["ntokens"]``, off/on interleaved epoch by
epoch; words/s = tokens / seconds (iterator construction included), ratio = median(on) /
median(off).

Writes benchmarks/results/mrasp.json and benchmarks/results/mrasp.png; works in
benchmarks/work/mrasp/{quick,full} (corpus and dictionaries kept between runs, every model
trained afresh; --fresh rebuilds everything).
Usage: benchmarks/mrasp.py [--quick] [--fresh] [--work DIR]
"""
import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes/mrasp2/run.sh"
SYSTEMS = ["baseline", "mrasp", "mrasp2"]
SUPERVISED = ["en-de", "de-en", "en-fr", "fr-en"]
ZEROSHOT = ["de-fr", "fr-de"]
SETTINGS = {  # recipe environment, plus the loading epochs per setting
    "quick": {"MAX_UPDATE": 250, "MAX_EVAL": 100, "LOAD_EPOCHS": 5},  # ~6 min on 2 cores (6m13s measured)
    "full": {"MAX_UPDATE": 1500, "MAX_EVAL": 200, "LOAD_EPOCHS": 5},  # ~20-25 min (estimated)
}
COMMON = {"LANGS": "de fr", "TRAIN_PAIRS": "en-de,de-en,en-fr,fr-en", "MONO_LANGS": "de,fr",
          "SUPERVISED": " ".join(SUPERVISED), "ZEROSHOT": " ".join(ZEROSHOT),
          "RETRIEVAL_LANGS": "en de fr", "RAS_PROB": 0.3, "AA_PROB": 0.9, "LAMBDA": 1.0,
          "TAU": 0.1, "VOCAB_SIZE": 4000, "LR": "1e-3", "MAX_TOKENS": 2000, "BEAM": 5}
PAPER = {  # ../shared/anchors/multilingual.md
    "mrasp_tokenised_bleu": {"en-de": 30.3, "en-fr": 44.3, "en-ro": 39.0, "ro-en": 37.7},
    "mrasp2_zeroshot_sacrebleu": {"de-fr": 24.7, "fr-de": 18.9},
    "mrasp2_tokenised_bleu": {"en-de": 29.5, "de-en": 35.2},
    "ted_m_retrieval_top1": {"mrasp2": 89.6, "mrasp2_without_aa": 84.4, "m_transformer": 79.8},
    "mrasp_ted_retrieval_top1": {"with_ras": 75.7, "without_ras": 74.6},
    "note": "PC32 (32 English-centric pairs), GPUs; mRASP transformer big 6+6 d1024, RAS p 0.3 "
            "(code 0.15), MUSE dictionaries, BPE 32k, 100k updates + fine-tuning; mRASP2 12+12 "
            "pre-norm, lambda 1, tau 0.1, AA 0.9, + news-crawl mono",
}
ENV = dict(os.environ, PYTHONWARNINGS="ignore", PYTHON=sys.executable)


def run_step(work, env, step):
    """One recipe step; returns (stdout, wall seconds)."""
    t0 = time.time()
    proc = subprocess.run(["bash", str(RECIPE), str(work), step], capture_output=True, text=True,
                          env=dict(ENV, **{k: str(v) for k, v in env.items()}))
    if proc.returncode != 0:
        raise RuntimeError(f"recipe step {step} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout, time.time() - t0


def train_stats(log_path):
    """The end-of-epoch train line of a fairseq-train log (one epoch: MAX_UPDATE < an epoch)."""
    text = log_path.read_text()
    words, wall, updates, ctr = 0.0, 0.0, 0, None
    for line in text.splitlines():
        if "| train | epoch" not in line:
            continue
        fields = dict(re.findall(r"\| (\w+) ([-\d.e+]+)", line))
        wall += float(fields["train_wall"])
        words += float(fields["wpb"]) * (int(fields["num_updates"]) - updates)
        updates = int(fields["num_updates"])
        ctr = float(fields["contrastive_loss"]) if "contrastive_loss" in fields else ctr
    valid = re.findall(r"\| valid on 'valid' subset \| loss ([\d.]+)", text)
    return {"train_wall_s": wall, "updates": updates, "target_words": round(words),
            "words_per_s": round(words / wall, 1) if wall else 0.0,
            "final_valid_loss": float(valid[-1]) if valid else None,
            "final_contrastive_loss": ctr}


def bleu(path):
    """(case-sensitive detokenised sacreBLEU of the D- lines, number of sentences)."""
    from ptnmt_fairseq.common.scoring import read_generate_output, score

    text = path.read_text(encoding="utf-8")
    return round(score(text, detokenized=True), 2), len(read_generate_output(text, "D")[1])


def multi_task(data, *extra):
    """translation_multi_langtok built in-process (as tests/test_mrasp.py does)."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        str(data), "--user-dir", str(REPO / "ptnmt_fairseq"), "--task",
        "translation_multi_langtok", "--arch", "transformer", "--cpu", "--seed", "1", *extra])
    return tasks.setup_task(convert_namespace_to_omegaconf(args).task)


def loading_throughput(work, epochs):
    """Words/s of whole training epochs with RAS off and on, interleaved epoch by epoch."""
    data, dicts = work / "data", sorted((work / "dict").glob("*.txt"))
    pairs = ["--lang-pairs", COMMON["TRAIN_PAIRS"]]
    ras = ["--ras-dicts", ",".join(map(str, dicts)), "--ras-prob", str(COMMON["RAS_PROB"])]
    built = {}
    for name, extra in (("off", pairs), ("on", pairs + ras)):
        t0 = time.time()
        task = multi_task(data, *extra)
        task.load_dataset("train")
        built[name] = (task, time.time() - t0)

    def epoch(task, e):
        t0, words, batches = time.time(), 0, 0
        itr = task.get_batch_iterator(task.dataset("train"), max_tokens=4000, seed=1,
                                      epoch=e).next_epoch_itr(shuffle=True)
        for batch in itr:
            words += int(batch["ntokens"])
            batches += 1
        return words, time.time() - t0, batches

    per_epoch = []
    for e in range(1, epochs + 1):
        row = {"epoch": e}
        for name in ("off", "on"):
            words, secs, batches = epoch(built[name][0], e)
            row[name] = {"words": words, "seconds": round(secs, 2), "batches": batches,
                         "words_per_s": round(words / secs, 1)}
        per_epoch.append(row)
        print(f"loading epoch {e}: off {row['off']['words_per_s']} w/s, on {row['on']['words_per_s']} w/s",
              file=sys.stderr)
    med = {n: statistics.median(r[n]["words_per_s"] for r in per_epoch) for n in ("off", "on")}
    return {"median_words_per_s": {"ras_off": med["off"], "ras_on": med["on"]},
            "ratio_on_over_off": round(med["on"] / med["off"], 4),
            "per_epoch": per_epoch,
            "task_build_and_load_s": {n: round(b[1], 2) for n, b in built.items()},
            "note": "whole epochs of get_batch_iterator(train, max_tokens=4000, seed=1, epoch=e)"
                    ".next_epoch_itr(shuffle=True), ntokens summed; seconds include building the "
                    "epoch's iterator (where RAS re-samples); interleaved off/on"}


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import logging

    import matplotlib.pyplot as plt
    import numpy as np

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq set the root to DEBUG

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = {"baseline": "tab:gray", "mrasp": "tab:blue", "mrasp2": "tab:orange"}
    directions = SUPERVISED + ZEROSHOT
    x = np.arange(len(directions))
    width = 0.27
    for i, s in enumerate(SYSTEMS):
        axes[0].bar(x + (i - 1) * width, [result["bleu"][s][d] for d in directions], width,
                    label=s, color=colors[s])
    axes[0].set_xticks(x, [d + ("\n(0-shot)" if d in ZEROSHOT else "") for d in directions])
    axes[0].set_ylabel("sacreBLEU")
    axes[0].set_title(f"BLEU, first {result['setup']['test_sentences']} test sentences")
    axes[0].legend()
    axes[1].bar(SYSTEMS, [result["retrieval_acc"][s] for s in SYSTEMS],
                color=[colors[s] for s in SYSTEMS])
    axes[1].set_ylabel("top-1 %")
    axes[1].set_title(f"Retrieval en/de/fr ({result['setup']['multiway_sentences']} multi-way sentences)")
    load = result["loading"]["per_epoch"]
    ep = [r["epoch"] for r in load]
    axes[2].plot(ep, [r["off"]["words_per_s"] for r in load], "o-", color="tab:gray", label="RAS off")
    axes[2].plot(ep, [r["on"]["words_per_s"] for r in load], "o-", color="tab:blue", label="RAS on")
    axes[2].set_ylim(bottom=0)
    axes[2].set_xlabel("epoch")
    axes[2].set_xticks(ep)
    axes[2].set_ylabel("words / second")
    axes[2].set_title(f"Data loading, ratio on/off {result['ratios']['ras_on_over_off_loading_wps']:.2f}")
    axes[2].legend()
    setup = result["setup"]
    fig.suptitle(f"m-Transformer vs mRASP vs mRASP2, gettext en<->de/fr, {setup['max_update']} "
                 f"updates each, {setup['arch']} ({setup['mode']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under 10 minutes on 2 cores")
    parser.add_argument("--fresh", action="store_true", help="also rebuild the corpus and dictionaries")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    settings = dict(SETTINGS[mode])
    load_epochs = settings.pop("LOAD_EPOCHS")
    env = dict(COMMON, **settings)
    work = (args.work or REPO / "benchmarks/work/mrasp" / mode).resolve()
    if args.fresh and work.exists():
        shutil.rmtree(work)
    for d in SYSTEMS:  # every model trains afresh
        shutil.rmtree(work / d, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    step_wall, logs = {}, {}
    for step in ("prepare", "baseline", "mrasp", "train", "evaluate"):
        logs[step], step_wall[step] = run_step(work, env, step)
        print(f"{step}: {step_wall[step]:.0f} s", file=sys.stderr)
    t_load = time.time()
    loading = loading_throughput(work, load_epochs)
    step_wall["loading"] = time.time() - t_load

    n = env["MAX_EVAL"]
    scores, sizes = {}, set()
    for s in SYSTEMS:
        scores[s] = {}
        for d in SUPERVISED + ZEROSHOT:
            scores[s][d], size = bleu(work / s / f"t{n}.{d}.gen")
            sizes.add((d, size))
    retrieval = {s: json.loads((work / s / "retrieval.json").read_text()) for s in SYSTEMS}
    stats = {s: train_stats(work / s / "train.log") for s in SYSTEMS}
    mean = lambda xs: round(sum(xs) / len(xs), 2)  # noqa: E731
    sup_mean = {s: mean([scores[s][d] for d in SUPERVISED]) for s in SYSTEMS}
    zs_mean = {s: mean([scores[s][d] for d in ZEROSHOT]) for s in SYSTEMS}
    data = work / "data"
    count = lambda name: sum(1 for _ in open(data / name, encoding="utf-8"))  # noqa: E731
    import torch

    result = {
        "setup": {
            "corpus": "gettext catalogs, English-centric en-de, en-fr (both directions); zero-shot "
                      "de-fr, fr-de from the multi-way test set", "mode": mode,
            "train_pairs": {p: count(f"train.{p}.{p.split('-')[0]}") for p in ("en-de", "en-fr")},
            "mono_sentences": {l: count(f"train.mono.{l}") for l in ("de", "fr")},
            "mono_source": "the non-English side of the en-de / en-fr training pairs",
            "dictionaries": "FreeDict en-de, en-fr, de-en, fr-en (prepare_freedict.sh)",
            "test_sentences": n, "decoded": {d: k for d, k in sorted(sizes)},
            "multiway_sentences": count("test.multiway.en"),
            "arch": "transformer 2+2 layers, d128, FFN 512, 4 heads, shared embeddings",
            "vocab": f"joint sentencepiece unigram {env['VOCAB_SIZE']} + LANG_TOK_XX",
            "max_update": env["MAX_UPDATE"], "max_tokens": env["MAX_TOKENS"], "lr": env["LR"],
            "schedule": f"inverse_sqrt, warmup {env['MAX_UPDATE'] // 10}, Adam (0.9, 0.98), "
                        "label smoothing 0.1, temperature sampling T=2",
            "ras_prob": env["RAS_PROB"], "aa_prob": env["AA_PROB"],
            "contrastive": {"lambda": env["LAMBDA"], "tau": env["TAU"]},
            "beam": env["BEAM"], "seed": 1,
            "checkpoint": "checkpoint_best.pt (validated once, at the end: = the last)",
            "bleu": "sacrebleu.corpus_bleu, detokenised, case-sensitive, on D-/T- lines",
            "device": f"CPU, {os.cpu_count()} cores ({platform.machine()}), torch "
                      f"{torch.__version__}, {torch.get_num_threads()} threads",
        },
        "ratios": {
            "ras_on_over_off_loading_wps": loading["ratio_on_over_off"],
            "mrasp_minus_baseline_bleu": round(sup_mean["mrasp"] - sup_mean["baseline"], 2),
            "mrasp2_minus_baseline_zeroshot_bleu": round(zs_mean["mrasp2"] - zs_mean["baseline"], 2),
        },
        "bleu": scores,
        "bleu_mean": {"supervised": sup_mean, "zero_shot": zs_mean},
        "retrieval_acc": {s: retrieval[s]["retrieval_acc"] for s in SYSTEMS},
        "retrieval_pairs": {s: retrieval[s]["pairs"] for s in SYSTEMS},
        "loading_words_per_s": loading["median_words_per_s"],
        "loading": loading,
        "training": stats,
        "train_wall_s": {s: stats[s]["train_wall_s"] for s in SYSTEMS},
        "step_wall_s": {k: round(v, 1) for k, v in step_wall.items()},
        "paper": PAPER,
        "wall_seconds": round(time.time() - t0),
    }
    out_dir = REPO / "benchmarks/results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "mrasp.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out_dir / "mrasp.png")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
