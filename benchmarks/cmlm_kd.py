#!/usr/bin/env python3
"""C-MLM distillation benchmark on gettext de->en (CPU): a Transformer student taught by a BERT
fine-tuned as a conditional MLM, against the same Transformer with label-smoothed cross-entropy.

In one run of recipes/cmlm_kd/run.sh, on the same data, vocabulary (the packaged
all-MiniLM-L6-v2's WordPiece on both sides), architecture, seed, batch size, learning rate,
schedule and budget (the standard mode: the same wall-clock minutes, ``--stop-time-hours``,
with the updates reached reported; the quick mode: the same updates):
  - ``teacher``: all-MiniLM-L6-v2 fine-tuned as a C-MLM (cmlm_finetune, BERT's Adam with linear
    warm-up and decay), then its top-128 soft labels of every training target token (7 circular
    masked copies per pair, dump_soft_labels);
  - ``baseline``: the Transformer with label-smoothed cross-entropy (eps 0.1);
  - ``student``: the same with cmlm_kd, alpha * L_kd + (1 - alpha) * L_xe, K = 8 of the stored
    128, the paper's IWSLT De-En alpha 0.5 and T 10.
Measured:
1. BLEU of both on the whole test split: sacreBLEU (tokenize none) of the WordPiece-joined H-
   lines of fairseq-generate (beam 5, at most 1.2 |x| + 10 tokens) against the raw target
   text in the BERT's basic tokenisation (lower-cased, accents stripped; never fairseq's T-
   lines); sacreBLEU's paired
   bootstrap of the student against the baseline; BLEU of each by reference length (words).
2. Dev NLL curves: the valid split's nll_loss (bits per token, no smoothing and no KD term)
   every VALID_EVERY updates, from each fairseq-train log.
3. Training throughput: the median target words per second of the train_inner lines of each
   log (``ratios.kd_over_ce_train_wps``: student over baseline; the labels are precomputed, so
   the student pays only for reading them and the K-way term).
4. The teacher: its valid C-MLM accuracy, the dump's target tokens per second and the store's
   bytes per target token (dump.json).

Writes benchmarks/results/cmlm_kd.json and benchmarks/results/cmlm_kd.png; works in
benchmarks/work/cmlm_kd/{quick,standard} (the binarised corpus is kept between runs, the
teacher, its soft labels and both students are trained afresh; --fresh rebuilds everything).
Usage: benchmarks/cmlm_kd.py [--quick] [--fresh] [--work DIR]
"""
import json
import time

import harness
from harness import REPO

RECIPE = REPO / "recipes/cmlm_kd/run.sh"
STEPS = ["prepare", "teacher", "dump", "baseline", "student", "evaluate"]
SYSTEMS = ["baseline", "student"]
SRC, TGT = "de", "en"
MINILM = "all-MiniLM-L6-v2"
# The recipe's 3+3-layer d256 student, pre-norm: with lr 2e-3 it learns fastest in minutes on
# this CPU (the mRASP calibration, README); the AR Transformer of benchmarks/abnet.py.
STUDENT_ARCH = ("--arch transformer --share-all-embeddings --encoder-layers 3 --decoder-layers 3 "
                "--encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 "
                "--decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 "
                "--decoder-attention-heads 4 --encoder-normalize-before --decoder-normalize-before")
SETTINGS = {
    "quick": {"MAX_TRAIN": 3000, "TEACHER_UPDATES": 30, "TEACHER_TOKENS": 2048,
              "MAX_UPDATE": 60, "VALID_EVERY": 20, "LOG_EVERY": 10, "TRAIN_EXTRA": "--bf16"},
    # Sized for 45 minutes on 2 cores (step times of a first standard run here): the teacher
    # (0.8 updates per second at 2048 BERT positions in bfloat16: 9 minutes), its dump over the
    # 23.7k training pairs (7 masked copies each: 6.7 minutes), two students of MINUTES each,
    # and decoding the test split twice. That run, 9 minutes per student (492 updates), left
    # the baseline at 3.25 BLEU with unbounded decoding; the AR Transformer of abnet.py reached
    # 8.9 / 12.6 BLEU after 500 / 750 updates with MAX_LEN.
    "standard": {"TEACHER_UPDATES": 400, "TEACHER_TOKENS": 2048, "MINUTES": 12,
                 "MAX_UPDATE": 100000, "VALID_EVERY": 100, "LOG_EVERY": 25, "TRAIN_EXTRA": "--bf16"},
}
# The paper's IWSLT De-En alpha and T. The teacher's peak lr is 6x the paper's 5e-5 for a run
# 1/250 as long: after 150 updates all-MiniLM-L6-v2 (no MLM head: a fresh transform) reached
# 16.7 % valid masked accuracy at 5e-5, 20.2 % at 3e-4 and 12.8 % at 1e-3 (75 updates).
# Decoding is bounded at 1.2 |x| + 10 tokens (benchmarks/abnet.py's MAX_LEN): in minutes of
# training, unbounded beams run on to 200 tokens and ruin BLEU for every system alike.
COMMON = {"SRC": SRC, "TGT": TGT, "BERT": MINILM, "KD_ALPHA": 0.5, "KD_TEMPERATURE": 10,
          "KD_TOPK": 8, "MAX_TOKENS": 2048, "LR": "2e-3", "BEAM": 5, "LENPEN": 1.0,
          "TEACHER_LR": "3e-4", "STUDENT_ARCH": STUDENT_ARCH, "DUMP_EXTRA": "--bf16",
          "GEN_EXTRA": "--max-len-a 1.2 --max-len-b 10"}
LENGTH_BUCKETS = [(1, 4), (5, 9), (10, 19), (20, None)]  # reference words, inclusive
# Chen et al., ACL 2020, Table 1-2 (tokenised multi-bleu, GPUs) and Sec. 4.4 (length analysis).
PAPER = {
    "iwslt14_de_en_bleu": {"transformer": 34.09, "with_bert_kd": 35.63},
    "iwslt15_en_vi_bleu": {"transformer": 30.16, "with_bert_kd": 31.51},
    "wmt14_en_de_bleu": {"transformer_base": 27.40, "with_bert_kd": 27.53},
    "kd_alpha_temperature": {"iwslt_de_en": [0.5, 10], "en_vi": [0.1, 5]},
    "length_claim": "the gain of the BERT teacher grows with the length of the output (Sec. 4.4)",
}


def recipe_env(settings):
    env = dict(COMMON, **settings)
    env["TRAIN_EXTRA"] = (f"{env['TRAIN_EXTRA']} --validate-interval-updates "
                          f"{env['VALID_EVERY']} --log-interval {env['LOG_EVERY']}")
    return env


def bucket_name(low, high):
    return f"{low}+" if high is None else f"{low}-{high}"


def bleu_by_length(hyps, refs):
    """{bucket: {system: BLEU, "sentences": n}} over reference length in words."""
    from ptnmt_fairseq.common.scoring import bleu_metric

    result = {}
    for low, high in LENGTH_BUCKETS:
        rows = [i for i, ref in enumerate(refs)
                if low <= len(ref.split()) and (high is None or len(ref.split()) <= high)]
        entry = {"sentences": len(rows)}
        for name, system_hyps in hyps.items():
            entry[name] = (round(bleu_metric(tokenize="none").corpus_score(
                [system_hyps[i] for i in rows], [[refs[i] for i in rows]]).score, 2)
                if rows else None)
        result[bucket_name(low, high)] = entry
    return result


def train_stats(log_text):
    inner = harness.inner_lines(log_text)
    epochs = harness.epoch_lines(log_text)
    updates = int(epochs[-1]["num_updates"]) if epochs else 0
    return {"updates": updates,
            "median_inner_wps": harness.median(row["wps"] for row in inner) if inner else None,
            "inner_lines": len(inner),
            "train_wall_s": sum(e["train_wall"] for e in epochs),
            "done_training_s": harness.done_training_seconds(log_text)}


def teacher_stats(work):
    log = (work / "teacher/train.log").read_text()
    valid = harness.epoch_lines(log, "valid")
    dump = json.loads((work / "soft_labels/dump.json").read_text())
    return {"updates": int(harness.epoch_lines(log)[-1]["num_updates"]),
            "valid_masked_accuracy": valid[-1]["accuracy"] if valid else None,
            "valid_masked_loss_bits": valid[-1]["loss"] if valid else None,
            "target_tokens_per_second": dump["target_tokens_per_second"],
            "bytes_per_target_token": dump["bytes_per_target_token"],
            "dump": dump}


def plot(result):
    setup = result["setup"]
    colors = {"baseline": "tab:gray", "student": "tab:blue"}
    title = (f"C-MLM distillation, gettext de->en, {setup['budget']} ({setup['mode']}): "
             f"student - baseline {result['ratios']['kd_minus_baseline_bleu']:+.2f} BLEU, "
             f"p = {result['significance']['student_vs_baseline']['p']:.3f}")
    with harness.figure("cmlm_kd", 4, title, size=(19, 4.4)) as axes:
        sig = result["significance"]["student_vs_baseline"]
        values = {"baseline (LS-CE)": sig["baseline_bleu"], "KD student": sig["system_bleu"]}
        intervals = [sig["baseline_ci95"], sig["ci95"]]
        errors = [[v - lo for v, (lo, _) in zip(values.values(), intervals)],
                  [hi - v for v, (_, hi) in zip(values.values(), intervals)]]
        axes[0].bar(list(values), list(values.values()), yerr=errors, capsize=6,
                    color=[colors["baseline"], colors["student"]])
        axes[0].set_ylabel("sacreBLEU (95% interval)")
        axes[0].set_title(f"BLEU, {setup['test_sentences']} test sentences")
        buckets = result["bleu_by_reference_length"]
        names = [f"{b}\n({v['sentences']})" for b, v in buckets.items()]
        harness.grouped_bars(axes[1], names, {s: [v[s] or 0.0 for v in buckets.values()]
                                              for s in SYSTEMS}, colors)
        axes[1].set_title("BLEU by reference length (words; sentences)")
        for name in SYSTEMS:
            curve = result["valid_nll_curve"][name]
            axes[2].plot([u for u, _ in curve], [n for _, n in curve], "o-", label=name,
                         color=colors[name])
        axes[2].set_xlabel("updates")
        axes[2].set_ylabel("valid NLL (bits/token)")
        axes[2].set_title("Dev NLL")
        axes[2].legend()
        harness.bars(axes[3], {s: result["training"][s]["median_inner_wps"] for s in SYSTEMS},
                     f"Training words/s, KD/CE {result['ratios']['kd_over_ce_train_wps']:.3f}; "
                     f"teacher {result['teacher']['target_tokens_per_second']:.0f} tok/s",
                     ylabel="target words / s", color=[colors[s] for s in SYSTEMS])


def main():
    args = harness.parse_args(__doc__, "cmlm_kd", "also rebuild the binarised corpus")
    settings = SETTINGS[args.mode]
    env = recipe_env(settings)
    work = args.work
    harness.prepare_work(work, args.fresh, ["teacher", "soft_labels"] + SYSTEMS)
    start = time.monotonic()
    steps = harness.run_recipe(RECIPE, work, STEPS, env)

    from ptnmt_fairseq.common.scoring import ordered_hypotheses

    raw = work / "pair" / f"test.{SRC}-{TGT}.{TGT}"
    refs = harness.bert_references(raw, MINILM, work / "test.basic")
    hyps, bleu = {}, {}
    for name in SYSTEMS:
        text = (work / name / "test.gen").read_text(encoding="utf-8")
        hyps[name] = ordered_hypotheses(text, refs, subword="wordpiece")
        bleu[name] = harness.score_generate(text, refs, subword="wordpiece",
                                            tokenize="none").value
    logs = {name: (work / name / "train.log").read_text() for name in SYSTEMS}
    training = {name: train_stats(text) for name, text in logs.items()}
    teacher = teacher_stats(work)
    result = {
        "setup": {
            "corpus": f"gettext {SRC}->{TGT}", "mode": args.mode,
            "device": harness.device_description(),
            "train_pairs": harness.count_lines(work / "pair" / f"train.{SRC}-{TGT}.{TGT}"),
            "test_sentences": len(refs), "bert": f"{MINILM} (teacher, and both vocabularies)",
            "student_arch": env["STUDENT_ARCH"], "lr": env["LR"],
            "max_tokens": env["MAX_TOKENS"], "label_smoothing": 0.1, "seed": 1,
            "kd": {"alpha": env["KD_ALPHA"], "temperature": env["KD_TEMPERATURE"],
                   "k": env["KD_TOPK"], "stored_k": teacher["dump"]["k"]},
            "teacher": (f"{env['TEACHER_UPDATES']} updates, peak lr {env['TEACHER_LR']}, "
                        f"{env['TEACHER_TOKENS']} BERT positions per batch, bf16"),
            "budget": (f"{env['MINUTES']} min per student (--stop-time-hours)" if "MINUTES" in env
                       else f"{env['MAX_UPDATE']} updates per student"),
            "train_extra": env["TRAIN_EXTRA"],
            "decoding": f"beam {env['BEAM']}, lenpen {env['LENPEN']}, {env['GEN_EXTRA']}",
            "checkpoint": "checkpoint_best.pt (lowest valid label-smoothed CE)",
            "bleu": harness.scoring_description(
                hypotheses="WordPiece-joined H- lines", tokenize="none",
                references_name=f"the raw references (pair/test.{SRC}-{TGT}.{TGT}) in "
                                f"{MINILM}'s basic tokenisation (lower-cased, accents stripped)"),
            "significance": harness.SIGNIFICANCE,
            "throughput": "median wps (target words per second) of the train_inner lines",
        },
        "ratios": {
            "kd_over_ce_train_wps": round(training["student"]["median_inner_wps"]
                                          / training["baseline"]["median_inner_wps"], 3),
            "kd_minus_baseline_bleu": round(bleu["student"] - bleu["baseline"], 2),
        },
        "bleu": bleu,
        "significance": {"student_vs_baseline": harness.paired_significance(
            hyps["baseline"], hyps["student"], refs, tokenize="none")},
        "bleu_by_reference_length": bleu_by_length(hyps, refs),
        "teacher": teacher,
        "valid_nll_curve": {name: harness.valid_nll_curve(text) for name, text in logs.items()},
        "training": training,
        "step_wall_s": harness.wall_seconds(steps),
    }
    harness.write_results("cmlm_kd", args.mode, result, PAPER, start)
    plot(result)


if __name__ == "__main__":
    main()
