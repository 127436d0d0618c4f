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
1. BLEU on the first ``MAX_EVAL`` lines of the test set of each supervised direction, and of
   the zero-shot directions de-fr, fr-de (multi-way set): case-sensitive sacreBLEU 13a of the
   detokenised D- lines of fairseq-generate (beam 5, checkpoint_best.pt) against the raw target
   text of the same lines, ``data/t<MAX_EVAL>.<src>-<tgt>.<tgt>`` (never fairseq's T- lines,
   rebuilt from dictionary ids).
2. Sentence retrieval top-1 accuracy (ptnmt_fairseq.mrasp2.retrieval, en de fr, multi-way set).
3. Training words/s and train_wall from the end-of-epoch ``train`` line of each log.
And, in-process, the data-loading cost of RAS: the task built with and without RAS (the same data
and dictionaries), whole epochs of ``task.get_batch_iterator(train, max_tokens=4000, seed=1,
epoch=e).next_epoch_itr(shuffle=True)`` summing ``batch["ntokens"]``, off/on interleaved epoch by
epoch; words/s = tokens / seconds (iterator construction included), ratio = median(on) /
median(off).

Writes benchmarks/results/mrasp.json and benchmarks/results/mrasp.png; works in
benchmarks/work/mrasp/{quick,standard} (corpus and dictionaries kept between runs, every model
trained afresh; --fresh rebuilds everything).
Usage: benchmarks/mrasp.py [--quick] [--fresh] [--work DIR]
"""
import json
import sys
import time

import harness
from harness import REPO

RECIPE = REPO / "recipes/mrasp2/run.sh"
STEPS = ["prepare", "baseline", "mrasp", "train", "evaluate"]
SYSTEMS = ["baseline", "mrasp", "mrasp2"]
SUPERVISED = ["en-de", "de-en", "en-fr", "fr-en"]
ZEROSHOT = ["de-fr", "fr-de"]
SETTINGS = {  # recipe environment, plus the loading epochs per setting
    "quick": {"MAX_UPDATE": 250, "MAX_EVAL": 100, "LOAD_EPOCHS": 5},
    "standard": {"MAX_UPDATE": 1500, "MAX_EVAL": 200, "LOAD_EPOCHS": 5},
}
COMMON = {"LANGS": "de fr", "TRAIN_PAIRS": "en-de,de-en,en-fr,fr-en", "MONO_LANGS": "de,fr",
          "SUPERVISED": " ".join(SUPERVISED), "ZEROSHOT": " ".join(ZEROSHOT),
          "RETRIEVAL_LANGS": "en de fr", "RAS_PROB": 0.3, "AA_PROB": 0.9, "LAMBDA": 1.0,
          "TAU": 0.1, "VOCAB_SIZE": 4000, "LR": "1e-3", "MAX_TOKENS": 2000, "BEAM": 5}
# mrasp_*: the README of linzehui/mRASP (tokenised BLEU; TED retrieval: the mean of the
# off-diagonal top-1 accuracies in its retrieval matrices). mrasp2_*: the README of
# PANXiao1994/mRASP2 (the released 12e12d model). ted_m_retrieval_top1: Pan et al., ACL 2021,
# Ted-M sentence retrieval (15-way, 2284 sentences), as presented in the ACL 2021 tutorial
# "Pre-training Methods for Neural Machine Translation" (Wang and Li), part III.
PAPER = {
    "mrasp_tokenised_bleu": {"en-de": 30.3, "en-fr": 44.3, "en-ro": 39.0, "ro-en": 37.7},
    "mrasp2_zeroshot_sacrebleu": {"de-fr": 24.7, "fr-de": 18.9},
    "mrasp2_tokenised_bleu": {"en-de": 29.5, "de-en": 35.2},
    "ted_m_retrieval_top1": {"mrasp2": 89.6, "mrasp2_without_aa": 84.4, "m_transformer": 79.8},
    "mrasp_ted_retrieval_top1": {"with_ras": 75.7, "without_ras": 74.6},
    "note": "PC32 (32 English-centric pairs), GPUs; mRASP transformer big 6+6 d1024, RAS p 0.3 "
            "(code 0.15), MUSE dictionaries, BPE 32k, 100k updates + fine-tuning; mRASP2 12+12 "
            "pre-norm, lambda 1, tau 0.1, AA 0.9, + news-crawl mono",
}


def train_stats(log_path):
    """Target words, words per second and train_wall seconds summed over the end-of-epoch
    train lines of a fairseq-train log (one line when MAX_UPDATE is under an epoch), with the
    last valid loss and contrastive loss."""
    text = log_path.read_text()
    words, wall, updates, ctr = 0.0, 0.0, 0, None
    for epoch in harness.epoch_lines(text):
        wall += epoch["train_wall"]
        words += epoch["wpb"] * (int(epoch["num_updates"]) - updates)  # words per batch x updates
        updates = int(epoch["num_updates"])
        ctr = epoch.get("contrastive_loss", ctr)
    valid = harness.epoch_lines(text, "valid")
    return {"train_wall_s": wall, "updates": updates, "target_words": round(words),
            "words_per_s": round(words / wall, 1) if wall else 0.0,
            "final_valid_loss": valid[-1]["loss"] if valid else None,
            "final_contrastive_loss": ctr}


def multi_task(data, *extra):
    """translation_multi_langtok built in-process, as fairseq-train would build it."""
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
    tasks, build_s = {}, {}
    for name, extra in (("off", pairs), ("on", pairs + ras)):
        tasks[name], build_s[name] = harness.timed(load_train, data, *extra)
    per_epoch = []
    for e in range(1, epochs + 1):
        row = {"epoch": e}
        for name in ("off", "on"):
            (words, batches), secs = harness.timed(read_epoch, tasks[name], e)
            row[name] = {"words": words, "seconds": round(secs, 2), "batches": batches,
                         "words_per_s": round(words / secs, 1)}
        per_epoch.append(row)
        print(f"loading epoch {e}: off {row['off']['words_per_s']} w/s, "
              f"on {row['on']['words_per_s']} w/s", file=sys.stderr)
    med = {n: harness.median(r[n]["words_per_s"] for r in per_epoch) for n in ("off", "on")}
    return {"median_words_per_s": {"ras_off": med["off"], "ras_on": med["on"]},
            "ratio_on_over_off": round(med["on"] / med["off"], 4),
            "per_epoch": per_epoch,
            "task_build_and_load_s": {n: round(secs, 2) for n, secs in build_s.items()},
            "note": "whole epochs of get_batch_iterator(train, max_tokens=4000, seed=1, epoch=e)"
                    ".next_epoch_itr(shuffle=True), ntokens summed; seconds include building the "
                    "epoch's iterator (where RAS re-samples); interleaved off/on"}


def load_train(data, *extra):
    task = multi_task(data, *extra)
    task.load_dataset("train")
    return task


def read_epoch(task, epoch):
    """(target words, batches) of one whole training epoch through fairseq's batch iterator;
    building the iterator is where RAS draws the epoch's substitutions."""
    words, batches = 0, 0
    itr = task.get_batch_iterator(task.dataset("train"), max_tokens=4000, seed=1,
                                  epoch=epoch).next_epoch_itr(shuffle=True)
    for batch in itr:
        words += int(batch["ntokens"])
        batches += 1
    return words, batches


def plot(result):
    setup = result["setup"]
    title = (f"m-Transformer vs mRASP vs mRASP2, gettext en<->de/fr, {setup['max_update']} "
             f"updates each, {setup['arch']} ({setup['mode']})")
    colors = {"baseline": "tab:gray", "mrasp": "tab:blue", "mrasp2": "tab:orange"}
    directions = SUPERVISED + ZEROSHOT
    with harness.figure("mrasp", 3, title, size=(15, 4.2)) as axes:
        harness.grouped_bars(
            axes[0], [d + ("\n(0-shot)" if d in ZEROSHOT else "") for d in directions],
            {s: [result["bleu"][s][d] for d in directions] for s in SYSTEMS}, colors)
        axes[0].set_ylabel("sacreBLEU")
        axes[0].set_title(f"BLEU, first {setup['test_sentences']} test sentences")
        harness.bars(axes[1], result["retrieval_acc"],
                     f"Retrieval en/de/fr ({setup['multiway_sentences']} multi-way sentences)",
                     ylabel="top-1 %", color=[colors[s] for s in SYSTEMS])
        load = result["loading"]["per_epoch"]
        epochs = [r["epoch"] for r in load]
        for name, color in (("off", "tab:gray"), ("on", "tab:blue")):
            axes[2].plot(epochs, [r[name]["words_per_s"] for r in load], "o-", color=color,
                         label=f"RAS {name}")
        axes[2].set_ylim(bottom=0)
        axes[2].set_xlabel("epoch")
        axes[2].set_xticks(epochs)
        axes[2].set_ylabel("words / second")
        axes[2].set_title("Data loading, ratio on/off "
                          f"{result['ratios']['ras_on_over_off_loading_wps']:.2f}")
        axes[2].legend()


def bleu_scores(work, n):
    """({system: {direction: BLEU}}, {direction: sentences decoded}) on the first ``n`` test
    sentences of every supervised and zero-shot direction."""
    scores, decoded = {}, {}
    for s in SYSTEMS:
        scores[s] = {}
        for d in SUPERVISED + ZEROSHOT:
            raw = work / "data" / f"t{n}.{d}.{d.split('-')[1]}"  # the recipe's first-n subset
            scores[s][d], decoded[d] = harness.score_file(work / s / f"t{n}.{d}.gen", raw)
    return scores, dict(sorted(decoded.items()))


def main():
    args = harness.parse_args(__doc__, "mrasp", "also rebuild the corpus and dictionaries")
    settings = dict(SETTINGS[args.mode])
    load_epochs = settings.pop("LOAD_EPOCHS")
    env = dict(COMMON, **settings)
    work = args.work
    harness.prepare_work(work, args.fresh, SYSTEMS)
    start = time.monotonic()
    steps = harness.run_recipe(RECIPE, work, STEPS, env)
    loading, steps["loading"] = harness.timed(loading_throughput, work, load_epochs)

    n = env["MAX_EVAL"]
    scores, decoded = bleu_scores(work, n)
    retrieval = {s: json.loads((work / s / "retrieval.json").read_text()) for s in SYSTEMS}
    stats = {s: train_stats(work / s / "train.log") for s in SYSTEMS}
    mean = lambda xs: round(sum(xs) / len(xs), 2)  # noqa: E731
    sup_mean = {s: mean([scores[s][d] for d in SUPERVISED]) for s in SYSTEMS}
    zs_mean = {s: mean([scores[s][d] for d in ZEROSHOT]) for s in SYSTEMS}
    data = work / "data"
    result = {
        "setup": {
            "corpus": "gettext catalogs, English-centric en-de, en-fr (both directions); zero-shot "
                      "de-fr, fr-de from the multi-way test set", "mode": args.mode,
            "train_pairs": {p: harness.count_lines(data / f"train.{p}.{p.split('-')[0]}")
                            for p in ("en-de", "en-fr")},
            "mono_sentences": {lang: harness.count_lines(data / f"train.mono.{lang}")
                               for lang in ("de", "fr")},
            "mono_source": "the non-English side of the en-de / en-fr training pairs",
            "dictionaries": "FreeDict en-de, en-fr, de-en, fr-en (prepare_freedict.sh)",
            "test_sentences": n, "decoded": decoded,
            "multiway_sentences": harness.count_lines(data / "test.multiway.en"),
            "arch": "transformer 2+2 layers, d128, FFN 512, 4 heads, shared embeddings",
            "vocab": f"joint sentencepiece unigram {env['VOCAB_SIZE']} + LANG_TOK_XX",
            "max_update": env["MAX_UPDATE"], "max_tokens": env["MAX_TOKENS"], "lr": env["LR"],
            "schedule": f"inverse_sqrt, warmup {env['MAX_UPDATE'] // 10}, Adam (0.9, 0.98), "
                        "label smoothing 0.1, temperature sampling T=2",
            "ras_prob": env["RAS_PROB"], "aa_prob": env["AA_PROB"],
            "contrastive": {"lambda": env["LAMBDA"], "tau": env["TAU"]},
            "beam": env["BEAM"], "seed": 1,
            "checkpoint": "checkpoint_best.pt (validated once, at the end: = the last)",
            "bleu": harness.scoring_description(
                references_name="the raw references (data/t<n>.<src>-<tgt>.<tgt>)"),
            "device": harness.device_description(),
        },
        "ratios": {
            "ras_on_over_off_loading_wps": loading["ratio_on_over_off"],
            "mrasp_minus_baseline_bleu": round(sup_mean["mrasp"] - sup_mean["baseline"], 2),
            "mrasp2_minus_baseline_zeroshot_bleu":
                round(zs_mean["mrasp2"] - zs_mean["baseline"], 2),
        },
        "bleu": scores,
        "bleu_mean": {"supervised": sup_mean, "zero_shot": zs_mean},
        "retrieval_acc": {s: retrieval[s]["retrieval_acc"] for s in SYSTEMS},
        "retrieval_pairs": {s: retrieval[s]["pairs"] for s in SYSTEMS},
        "loading_words_per_s": loading["median_words_per_s"],
        "loading": loading,
        "training": stats,
        "train_wall_s": {s: stats[s]["train_wall_s"] for s in SYSTEMS},
        "step_wall_s": harness.wall_seconds(steps),
    }
    harness.write_results("mrasp", args.mode, result, PAPER, start)
    plot(result)


if __name__ == "__main__":
    main()
