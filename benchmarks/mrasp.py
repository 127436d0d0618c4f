#!/usr/bin/env python3
"""mRASP / mRASP2 benchmark on gettext en<->de, en<->fr and en-ro (CPU): m-Transformer vs mRASP vs
mRASP2, and mRASP pre-training vs random initialisation on a pair unseen in pre-training.

In one run of recipes/mrasp2/run.sh and recipes/mrasp/run.sh on the same data, dictionaries and
seed, three many-to-many models train on en-de, de-en, en-fr, fr-en with the same budget (the
standard mode: the same wall-clock minutes, ``--stop-time-hours``, with the updates reached
reported; the quick mode: the same updates), batch size, learning rate and schedule:
  - ``baseline``: the plain multilingual Transformer (no RAS, label-smoothed CE);
  - ``mrasp``: random aligned substitution on the training sources (RAS p=0.3, FreeDict
    en-de/en-fr/de-en/fr-en word dictionaries), label-smoothed CE;
  - ``mrasp2``: RAS + aligned augmentation (AA p=0.9 on monolingual de/fr: the non-English side
    of the en-de/en-fr training pairs) + the contrastive loss (lambda 1, tau 0.1).
Then en-ro, never seen in pre-training (FreeDict has no Romanian, so RAS never wrote it either),
is trained with one fine-tuning budget twice: from the mRASP model (``ft.en-ro``) and from random
initialisation (``scratch.en-ro``), the same architecture and vocabulary (mRASP's central claim).
Measured:
1. BLEU of every supervised direction, the zero-shot directions de-fr and fr-de (multi-way set)
   and en-ro: case-sensitive sacreBLEU 13a of the detokenised D- lines of fairseq-generate
   (beam 5) against the raw target text (never fairseq's T- lines); the standard mode decodes
   whole test splits, the quick mode their first MAX_EVAL lines.
2. ``significance``: sacreBLEU's paired bootstrap resampling (1000 resamples) of each paper
   comparison: delta, the system's 95% interval, p (common/scoring.py ``paired_bootstrap``);
   "pooled" concatenates the directions' test sets.
3. Off-target rate of the zero-shot outputs: % of hypotheses that py3langid (restricted to en, de,
   fr, ro) does not identify as the target language, beside the same rate of the references.
4. Sentence retrieval top-1 accuracy (ptnmt_fairseq.mrasp2.retrieval, en de fr, multi-way set).
5. Updates, training words/s and train_wall from each fairseq-train log.
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

MRASP2_RECIPE = REPO / "recipes/mrasp2/run.sh"
MRASP_RECIPE = REPO / "recipes/mrasp/run.sh"
PRETRAIN_STEPS = ["prepare", "baseline", "mrasp", "train", "evaluate"]  # of MRASP2_RECIPE
UNSEEN_STEPS = ["finetune", "evaluate", "scratch"]  # of MRASP_RECIPE, from WORKDIR/mrasp
SYSTEMS = ["baseline", "mrasp", "mrasp2"]
SUPERVISED = ["en-de", "de-en", "en-fr", "fr-en"]
ZEROSHOT = ["de-fr", "fr-de"]
UNSEEN = "en-ro"
LANGUAGES = ["en", "de", "fr", "ro"]  # of the corpus: language identification chooses among them
STANDARD_ARCH = ("--arch transformer --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 "
                 "--decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 "
                 "--encoder-attention-heads 4 --decoder-attention-heads 4 --encoder-normalize-before "
                 "--decoder-normalize-before --share-all-embeddings")
SETTINGS = {  # recipe environment, plus the loading epochs per setting
    "quick": {"MAX_UPDATE": 200, "WARMUP": 20, "MAX_UPDATE_FT": 100, "WARMUP_FT": 10,
              "MAX_EVAL": 100, "VOCAB_SIZE": 4000, "LR": "1e-3", "LR_FT": "1e-3",
              "MAX_TOKENS": 2000, "LOAD_EPOCHS": 3},
    # Minutes per system (mRASP2 does more per update): sized so that 3 pre-trainings, two
    # en-ro trainings and decoding every whole test split fit in 45 minutes on 2 cores.
    # Calibrated here (the baseline alone, 10 min, bf16): 2048 tokens per batch reached
    # fr-en 11.6 / en-de 4.9 BLEU, 4096 tokens 3.2 / 1.3; 1024 tokens learned no faster than 2048.
    "standard": {"MINUTES": 8, "MAX_UPDATE": 100000, "WARMUP": 200, "MINUTES_FT": 2.5,
                 "MAX_UPDATE_FT": 100000, "WARMUP_FT": 100, "MAX_EVAL": "all",
                 "VOCAB_SIZE": 8000, "LR": "2e-3", "LR_FT": "1e-3", "MAX_TOKENS": 2048,
                 "ARCH_ARGS": STANDARD_ARCH, "TRAIN_EXTRA": "--bf16", "LOAD_EPOCHS": 3},
}
COMMON = {"LANGS": "de fr ro", "TRAIN_PAIRS": "en-de,de-en,en-fr,fr-en", "MONO_LANGS": "de,fr",
          "SUPERVISED": " ".join(SUPERVISED), "ZEROSHOT": " ".join(ZEROSHOT),
          "RETRIEVAL_LANGS": "en de fr", "RAS_PROB": 0.3, "AA_PROB": 0.9, "LAMBDA": 1.0,
          "TAU": 0.1, "BEAM": 5, "FINETUNE_PAIRS": UNSEEN, "PRETRAINED": "mrasp"}
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
    title = (f"m-Transformer vs mRASP vs mRASP2 (gettext en<->de/fr), and en-ro from mRASP vs from "
             f"scratch; {setup['budget']} ({setup['mode']})")
    colors = {"baseline": "tab:gray", "mrasp": "tab:blue", "mrasp2": "tab:orange"}
    directions = SUPERVISED + ZEROSHOT
    with harness.figure("mrasp", 4, title, size=(19, 4.4)) as axes:
        harness.grouped_bars(
            axes[0], [d + ("\n(0-shot)" if d in ZEROSHOT else "") for d in directions],
            {s: [result["bleu"][s][d] for d in directions] for s in SYSTEMS}, colors)
        axes[0].set_ylabel("sacreBLEU")
        axes[0].set_title("BLEU, whole test sets" if setup["mode"] == "standard"
                          else "BLEU, first test sentences")
        sig = result["significance"][f"mrasp_pretrained_vs_scratch/{UNSEEN}"]
        values = {"from scratch": sig["baseline_bleu"], "from mRASP": sig["system_bleu"]}
        intervals = [sig["baseline_ci95"], sig["ci95"]]
        errors = [[v - lo for v, (lo, _) in zip(values.values(), intervals)],
                  [hi - v for v, (_, hi) in zip(values.values(), intervals)]]
        axes[1].bar(list(values), list(values.values()), yerr=errors, capsize=6,
                    color=["tab:gray", "tab:blue"])
        axes[1].set_title(f"{UNSEEN} (unseen), same budget: delta {sig['delta']:+.2f}, "
                          f"p = {sig['p']:.3f}")
        axes[1].set_ylabel("sacreBLEU (95% interval)")
        harness.bars(axes[2], result["retrieval_acc"],
                     f"Retrieval en/de/fr ({setup['multiway_sentences']} multi-way sentences)",
                     ylabel="top-1 %", color=[colors[s] for s in SYSTEMS])
        load = result["loading"]["per_epoch"]
        epochs = [r["epoch"] for r in load]
        for name, color in (("off", "tab:gray"), ("on", "tab:blue")):
            axes[3].plot(epochs, [r[name]["words_per_s"] for r in load], "o-", color=color,
                         label=f"RAS {name}")
        axes[3].set_ylim(bottom=0)
        axes[3].set_xlabel("epoch")
        axes[3].set_xticks(epochs)
        axes[3].set_ylabel("words / second")
        axes[3].set_title("Data loading, ratio on/off "
                          f"{result['ratios']['ras_on_over_off_loading_wps']:.2f}")
        axes[3].legend()


def decoded_subset(n):
    """The recipe's decoded test subset: tN (the first N lines) or test (N = all)."""
    return "test" if n == "all" else f"t{n}"


def reference_file(work, n, direction):
    return work / "data" / f"{decoded_subset(n)}.{direction}.{direction.split('-')[1]}"


def outputs(work, n):
    """{model folder: {direction: (hypotheses, references)}} of every decoded direction."""
    found = {}
    models = {s: SUPERVISED + ZEROSHOT for s in SYSTEMS}
    models.update({f"ft.{UNSEEN}": [UNSEEN], f"scratch.{UNSEEN}": [UNSEEN]})
    for model, directions in models.items():
        found[model] = {}
        for d in directions:
            refs = harness.references(reference_file(work, n, d))
            gen = work / model / f"{decoded_subset(n)}.{d}.gen"
            found[model][d] = (harness.detokenized_hypotheses(gen, refs), refs)
    return found


def bleu(hyps_refs):
    from ptnmt_fairseq.common.scoring import bleu_metric

    hyps, refs = hyps_refs
    return round(bleu_metric().corpus_score(hyps, [refs]).score, 2)


def pooled(found, model, directions):
    """(hypotheses, references) of ``directions`` concatenated, in that order."""
    hyps, refs = [], []
    for d in directions:
        hyps += found[model][d][0]
        refs += found[model][d][1]
    return hyps, refs


COMPARISONS = {  # name: (baseline model, system model, directions pooled) - the papers' claims
    f"mrasp_pretrained_vs_scratch/{UNSEEN}": (f"scratch.{UNSEEN}", f"ft.{UNSEEN}", [UNSEEN]),
    "mrasp_vs_baseline/supervised": ("baseline", "mrasp", SUPERVISED),
    **{f"mrasp_vs_baseline/{d}": ("baseline", "mrasp", [d]) for d in SUPERVISED},
    "mrasp2_vs_baseline/zero-shot": ("baseline", "mrasp2", ZEROSHOT),
    **{f"mrasp2_vs_baseline/{d}": ("baseline", "mrasp2", [d]) for d in ZEROSHOT},
    "mrasp2_vs_mrasp/zero-shot": ("mrasp", "mrasp2", ZEROSHOT),
    "mrasp2_vs_baseline/supervised": ("baseline", "mrasp2", SUPERVISED),
}


def significance(found, comparisons=None):
    """{comparison: paired bootstrap record} for every entry of ``comparisons`` ({name:
    (baseline model, system model, directions pooled)}; default COMPARISONS)."""
    result = {}
    for name, (base, system, directions) in (comparisons or COMPARISONS).items():
        base_hyps, refs = pooled(found, base, directions)
        result[name] = harness.paired_significance(base_hyps, pooled(found, system, directions)[0],
                                                   refs)
    return result


def off_target_rates(found):
    """{model: {direction: off-target %}} of the zero-shot outputs, and of the references."""
    from ptnmt_fairseq.common.multilingual.language_id import off_target

    rates = {s: {d: off_target(found[s][d][0], d.split("-")[1], LANGUAGES) for d in ZEROSHOT}
             for s in SYSTEMS}
    rates["references"] = {d: off_target(found["baseline"][d][1], d.split("-")[1], LANGUAGES)
                           for d in ZEROSHOT}
    return rates


def main():
    args = harness.parse_args(__doc__, "mrasp", "also rebuild the corpus and dictionaries", [
        ("--reuse-pretrained", "keep the three pre-trained systems of the last run in the work "
                               "folder (and their step times) and re-run only the en-ro "
                               "trainings and the analysis")])
    settings = dict(SETTINGS[args.mode])
    load_epochs = settings.pop("LOAD_EPOCHS")
    env = dict(COMMON, **settings)
    work = args.work
    unseen_models = [f"ft.{UNSEEN}", f"scratch.{UNSEEN}"]
    pretrained_steps = work / "pretraining_steps.json"
    if args.reuse_pretrained and (args.fresh or not pretrained_steps.is_file()):
        raise SystemExit(f"--reuse-pretrained needs the pre-trained systems of an earlier run in "
                         f"{work} ({pretrained_steps}), and excludes --fresh")
    harness.prepare_work(work, args.fresh and not args.reuse_pretrained,
                         unseen_models + ([] if args.reuse_pretrained else SYSTEMS))
    start = time.monotonic()
    if args.reuse_pretrained:
        steps = json.loads(pretrained_steps.read_text())
    else:
        steps = harness.run_recipe(MRASP2_RECIPE, work, PRETRAIN_STEPS, env)
        pretrained_steps.write_text(json.dumps(harness.wall_seconds(steps)))
    steps.update({f"unseen_{k}": v for k, v in
                  harness.run_recipe(MRASP_RECIPE, work, UNSEEN_STEPS, env).items()})
    loading, steps["loading"] = harness.timed(loading_throughput, work, load_epochs)

    n = env["MAX_EVAL"]
    found = outputs(work, n)
    scores = {m: {d: bleu(v) for d, v in dirs.items()} for m, dirs in found.items()}
    retrieval = {s: json.loads((work / s / "retrieval.json").read_text()) for s in SYSTEMS}
    stats = {m: train_stats(work / m / "train.log") for m in SYSTEMS + unseen_models}
    pooled_bleu = {s: {"supervised": bleu(pooled(found, s, SUPERVISED)),
                       "zero_shot": bleu(pooled(found, s, ZEROSHOT))} for s in SYSTEMS}
    sig = significance(found)
    data = work / "data"
    budget = (f"{env['MINUTES']} min per pre-training, {env['MINUTES_FT']} min per en-ro training "
              "(--stop-time-hours)" if "MINUTES" in env else
              f"{env['MAX_UPDATE']} updates per pre-training, {env['MAX_UPDATE_FT']} per en-ro")
    result = {
        "setup": {
            "corpus": "gettext catalogs, English-centric en-de, en-fr (both directions) for "
                      "pre-training; en-ro (unseen) for fine-tuning; zero-shot de-fr, fr-de from "
                      "the multi-way test set", "mode": args.mode,
            "train_pairs": {p: harness.count_lines(data / f"train.{p}.{p.split('-')[0]}")
                            for p in ("en-de", "en-fr", UNSEEN)},
            "mono_sentences": {lang: harness.count_lines(data / f"train.mono.{lang}")
                               for lang in ("de", "fr")},
            "mono_source": "the non-English side of the en-de / en-fr training pairs",
            "dictionaries": "FreeDict en-de, en-fr, de-en, fr-en (prepare_freedict.sh); none "
                            "for Romanian",
            "test_sentences": {d: len(v[1]) for d, v in
                               {**found["baseline"], **found[f"ft.{UNSEEN}"]}.items()},
            "multiway_sentences": harness.count_lines(data / "test.multiway.en"),
            "arch": env.get("ARCH_ARGS", "transformer 2+2 layers, d128, FFN 512, 4 heads, "
                                         "shared embeddings (the recipes' default)"),
            "vocab": f"joint sentencepiece unigram {env['VOCAB_SIZE']} over en, de, fr, ro "
                     "+ LANG_TOK_XX",
            "budget": budget, "max_tokens": env["MAX_TOKENS"], "lr": env["LR"],
            "lr_finetune": env["LR_FT"], "train_extra": env.get("TRAIN_EXTRA", ""),
            "schedule": f"inverse_sqrt, warmup {env['WARMUP']} (en-ro: {env['WARMUP_FT']}), "
                        "Adam (0.9, 0.98), label smoothing 0.1, temperature sampling T=2",
            "ras_prob": env["RAS_PROB"], "aa_prob": env["AA_PROB"],
            "contrastive": {"lambda": env["LAMBDA"], "tau": env["TAU"]},
            "beam": env["BEAM"], "seed": 1,
            "checkpoint": "checkpoint_best.pt (lowest valid loss; validated at each epoch's end "
                          "and at the budget's end)",
            "bleu": harness.scoring_description(
                references_name="the raw references (data/<subset>.<src>-<tgt>.<tgt>)"),
            "significance": (harness.SIGNIFICANCE
                             + "; pooled: the directions' test sets concatenated"),
            "off_target": f"py3langid restricted to {LANGUAGES}",
            "device": harness.device_description(),
        },
        "ratios": {
            "ras_on_over_off_loading_wps": loading["ratio_on_over_off"],
            "mrasp_pretrained_minus_scratch_bleu": sig[f"mrasp_pretrained_vs_scratch/{UNSEEN}"]["delta"],
            "mrasp_minus_baseline_bleu": sig["mrasp_vs_baseline/supervised"]["delta"],
            "mrasp2_minus_baseline_zeroshot_bleu": sig["mrasp2_vs_baseline/zero-shot"]["delta"],
        },
        "significance": sig,
        "bleu": scores,
        "bleu_pooled": pooled_bleu,
        "off_target": off_target_rates(found),
        "retrieval_acc": {s: retrieval[s]["retrieval_acc"] for s in SYSTEMS},
        "retrieval_pairs": {s: retrieval[s]["pairs"] for s in SYSTEMS},
        "loading_words_per_s": loading["median_words_per_s"],
        "loading": loading,
        "training": stats,
        "updates": {m: stats[m]["updates"] for m in stats},
        "train_wall_s": {m: stats[m]["train_wall_s"] for m in stats},
        "step_wall_s": harness.wall_seconds(steps),
    }
    if args.reuse_pretrained:
        result["setup"]["reused_pretraining"] = ("the pre-trained systems and their step times "
                                                 "come from the previous run in this folder")
    harness.write_results("mrasp", args.mode, result, PAPER, start)
    plot(result)


if __name__ == "__main__":
    main()
