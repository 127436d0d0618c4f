#!/usr/bin/env python3
"""BERT inside the NMT model on gettext en->de (CPU): CTNMT's three strategies, alone and
together, and BERT-fused, against the same Transformer without BERT.

In one working folder, recipes/ctnmt/run.sh then recipes/bert_fused/run.sh, on the same data
(the source in all-MiniLM-L6-v2's WordPiece, the target in a cased WordPiece learned on it),
architecture (3+3 layers, d256, pre-norm), seed, batch size, learning rate and schedule:
  - ``baseline``: the Transformer, label-smoothed cross-entropy;
  - ``ctnmt_ad``: asymptotic distillation alone (BERT frozen, teacher only, alpha 0.9);
  - ``ctnmt_ds``: the dynamic switch alone on BERT's second-to-last layer, BERT frozen;
  - ``ctnmt_rs``: BERT's states as the encoder input, BERT fine-tuned at rho(t) * lr (Eq. 10,
    T' and T scaled to the run);
  - ``ctnmt_all``: the three together;
  each CTNMT system trained for the same wall-clock minutes (standard; the updates reached are
  reported) or updates (quick) as ``baseline_equal_time``, the baseline's best checkpoint at
  that point of its run, which then goes on to the main baseline's longer budget (fairseq's
  --stop-time-hours counts the time of both parts; the CTNMT systems cost more per update, and
  2 cores cannot give each of them the main baseline's budget within the protocol's 45 minutes);
  - ``bert_fused``: warm-started strictly from the baseline's best checkpoint, BERT-fused
    attentions new, trained on cached BERT features for FUSED minutes; ``continued``: the
    baseline trained on from the same checkpoint with the same optimiser and budget (its fair
    comparison: what the extra training alone gives); ``bert_fused_live``: a short run of the
    same model with BERT live, for the cache's speed-up.
Measured:
1. BLEU on the whole test split: sacreBLEU (tokenize none) of the WordPiece-joined H- lines
   (beam 5, at most 1.2 |x| + 10 tokens) against the raw target text in the target
   vocabulary's basic tokenisation (cased, never fairseq's T- lines); sacreBLEU's paired
   bootstrap of each CTNMT system against ``baseline_equal_time`` and of BERT-fused against
   ``continued`` (same start, same budget), and of each against the main baseline.
2. Training step time: 1 / the median updates per second of each log's train_inner lines,
   over the baseline's (``ratios.<system>_over_baseline_step_time``; BERT-fused's over the
   continued baseline's, both started from one checkpoint), and BERT-fused cached over live.
3. Decoding time: fairseq-generate's own "Translated N sentences ... in T s" of the test split,
   over the baseline's (``ratios.<system>_over_baseline_decode_time``): distillation alone adds
   nothing at inference, the switch and BERT-fused add BERT's forward pass.

Writes benchmarks/results/bert_in_nmt.json and benchmarks/results/bert_in_nmt.png; works in
benchmarks/work/bert_in_nmt/{quick,standard} (the binarised corpus and the feature cache are
kept between runs, every system is trained afresh; --fresh rebuilds everything).
Usage: benchmarks/bert_in_nmt.py [--quick] [--fresh] [--work DIR]
"""
import re
import time

import harness
from harness import REPO

CTNMT = REPO / "recipes/ctnmt/run.sh"
FUSED = REPO / "recipes/bert_fused/run.sh"
CTNMT_SYSTEMS = ["ctnmt_ad", "ctnmt_ds", "ctnmt_rs", "ctnmt_all"]
SYSTEMS = ["baseline", *CTNMT_SYSTEMS, "bert_fused"]
TRAINED = [*SYSTEMS, "continued", "bert_fused_live"]
EQUAL_TIME = "baseline_equal_time"
SRC, TGT = "en", "de"
MINILM = "all-MiniLM-L6-v2"
SETTINGS = {
    "quick": {"MAX_TRAIN": 3000, "MAX_UPDATE": 40, "FUSED_UPDATES": 20, "LIVE_UPDATES": 10,
              "RATE_WARMUP": 10, "RATE_TOTAL": 20, "VALID_EVERY": 20, "LOG_EVERY": 5},
    # Sized for 45 minutes on 2 cores (a calibration run here: the baseline makes 1.1 updates
    # per second and was at 0.53 BLEU after 6 minutes, 400 updates; C-MLM's de->en baseline
    # of the same size needed 663 updates for 12.5): MINUTES per CTNMT system and for the
    # equal-time baseline, MAIN_BUDGET for the main baseline, FUSED_MINUTES for BERT-fused and
    # the continued baseline.
    "standard": {"MINUTES": 4, "MAX_UPDATE": 100000, "FUSED_MINUTES": 2.5,
                 "FUSED_UPDATES": 100000, "LIVE_UPDATES": 40, "RATE_WARMUP": 100,
                 "RATE_TOTAL": 200, "VALID_EVERY": 100, "LOG_EVERY": 10},
}
MAIN_BUDGET = {"quick": {"MAX_UPDATE": "80"}, "standard": {"MINUTES": "12"}}
COMMON = {"SRC": SRC, "TGT": TGT, "BERT": MINILM, "MAX_TOKENS": 2048, "LR": "2e-3",
          "WARMUP": 200, "FUSED_LR": "5e-4", "FUSED_WARMUP": 100, "BEAM": 5, "LENPEN": 1.0,
          "GEN_EXTRA": "--max-len-a 1.2 --max-len-b 10"}
# Yang et al., AAAI 2020, Table 1 and 5 (WMT14 En-De, cased multi-bleu); Zhu et al., ICLR 2020,
# Table 1 (IWSLT'14 En->De) and Sec. 5 (inference time); bert-nmt/bert-nmt issue reports.
PAPER = {
    "ctnmt_wmt14_en_de_bleu": {"transformer": 27.2, "rs": 29.7, "ds": 29.4, "ad": 29.2,
                               "ctnmt": 30.1},
    "ctnmt_rho_table5": {"1 (fine-tuning)": 27.7, "0.01": 29.0, "slanted": 29.7, "0": 28.4},
    "bert_fused_iwslt14_en_de_bleu": {"transformer": 28.57, "bert_fused": 30.45},
    "bert_fused_inference_time": "+38% to +49% over the Transformer (the authors)",
    "bert_fused_epoch_time_complaint": "about 40x slower epochs (a user report)",
}


def recipe_env(settings):
    env = dict(COMMON, **settings)
    # bfloat16 on the CPU; unflattened so that rate_scheduled can give BERT its own group
    env["TRAIN_EXTRA"] = (f"--bf16 --fp16-no-flatten-grads --validate-interval-updates "
                          f"{env['VALID_EVERY']} --log-interval {env['LOG_EVERY']}")
    return {k: str(v) for k, v in env.items()}


def step_seconds(log_text):
    """1 / the median updates per second of the train_inner lines."""
    inner = [row["ups"] for row in harness.inner_lines(log_text) if row.get("ups", 0) > 0]
    return round(1 / harness.median(inner), 4) if inner else None


def train_stats(log_text):
    epochs = harness.epoch_lines(log_text)
    inner = harness.inner_lines(log_text)
    return {"updates": int(inner[-1]["num_updates"]) if inner else 0,
            "step_seconds": step_seconds(log_text),
            "median_inner_wps": harness.median(r["wps"] for r in inner) if inner else None,
            "train_wall_s": sum(e["train_wall"] for e in epochs) if epochs else None,
            "done_training_s": harness.done_training_seconds(log_text)}


def decode_timing(log_path):
    """fairseq-generate's own timing, "Translated N sentences (T tokens) in S s": (S, T)."""
    found = re.findall(r"Translated [\d,]+ sentences \(([\d,]+) tokens\) in ([\d.]+)s",
                       log_path.read_text())
    return (float(found[-1][1]), int(found[-1][0].replace(",", ""))) if found else (None, None)


def keep_equal_time_baseline(work):
    """The baseline as it stands at the CTNMT systems' budget: its best checkpoint and log so
    far, copied before the same run goes on to the main budget."""
    import shutil

    target = work / EQUAL_TIME
    target.mkdir(exist_ok=True)
    for name in ("checkpoint_best.pt", "train.log"):
        shutil.copy2(work / "baseline" / name, target / name)


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def plot(result):
    setup, sig = result["setup"], result["significance"]
    names = ["baseline", EQUAL_TIME, *CTNMT_SYSTEMS, "continued", "bert_fused"]
    colors = {"baseline": "tab:gray", EQUAL_TIME: "darkgray", "continued": "silver",
              "bert_fused": "tab:purple"}
    title = (f"BERT in NMT, gettext en->de ({setup['mode']}): CTNMT "
             f"{result['bleu']['ctnmt_all'] - result['bleu'][EQUAL_TIME]:+.2f} BLEU vs the "
             f"equal-time baseline (p {sig['ctnmt_all_vs_' + EQUAL_TIME]['p']:.3f}), BERT-fused "
             f"{result['bleu']['bert_fused'] - result['bleu']['continued']:+.2f} vs continued "
             f"(p {sig['bert_fused_vs_continued']['p']:.3f})")
    with harness.figure("bert_in_nmt", 4, title, size=(21, 4.6)) as axes:
        values = {n: result["bleu"][n] for n in names}
        intervals = {"baseline": sig["ctnmt_all_vs_baseline"]["baseline_ci95"],
                     EQUAL_TIME: sig[f"ctnmt_all_vs_{EQUAL_TIME}"]["baseline_ci95"]}
        low_high = [intervals.get(n) or sig[f"{n}_vs_baseline"]["ci95"] for n in names]
        errors = [[max(v - lo, 0) for v, (lo, _) in zip(values.values(), low_high)],
                  [max(hi - v, 0) for v, (_, hi) in zip(values.values(), low_high)]]
        axes[0].bar(names, list(values.values()), yerr=errors, capsize=4,
                    color=[colors.get(n, "tab:blue") for n in names])
        axes[0].set_ylabel("sacreBLEU (95% interval)")
        axes[0].set_title(f"BLEU, {setup['test_sentences']} test sentences")
        axes[0].tick_params(axis="x", rotation=45)
        step = {n: result["ratios"].get(f"{n}_over_baseline_step_time") for n in SYSTEMS[1:]}
        step["bert_fused\n(live BERT)"] = ratio(result["training"]["bert_fused_live"]["step_seconds"],
                                              result["training"]["continued"]["step_seconds"])
        harness.bars(axes[1], {k: v or 0 for k, v in step.items()}, "Training step time / baseline",
                     color="tab:blue")
        axes[1].tick_params(axis="x", rotation=45)
        harness.bars(axes[2], {n: result["ratios"][f"{n}_over_baseline_decode_time_per_token"]
                               or 0 for n in SYSTEMS[1:]},
                     "Decoding time per output token / baseline", color="tab:green")
        axes[2].tick_params(axis="x", rotation=45)
        for name in ["baseline", *CTNMT_SYSTEMS]:
            curve = result["valid_nll_curve"][name]
            axes[3].plot([u for u, _ in curve], [n for _, n in curve], "o-", label=name,
                         color=colors.get(name))
        axes[3].set_xlabel("updates")
        axes[3].set_ylabel("valid NLL (bits/token)")
        axes[3].set_title("Dev NLL")
        axes[3].legend()


def main():
    args = harness.parse_args(__doc__, "bert_in_nmt", "also rebuild the corpus and the cache")
    env = recipe_env(SETTINGS[args.mode])
    work = args.work
    harness.prepare_work(work, args.fresh, [*TRAINED, EQUAL_TIME])
    start = time.monotonic()
    steps = harness.run_recipe(CTNMT, work, ["prepare", "baseline"], env)
    keep_equal_time_baseline(work)
    steps["baseline_main"] = harness.run_recipe(CTNMT, work, ["baseline"],
                                                dict(env, **MAIN_BUDGET[args.mode]))["baseline"]
    steps.update(harness.run_recipe(CTNMT, work, ["ad", "ds", "rs", "ctnmt"], env))
    steps.update(harness.run_recipe(FUSED, work, ["cache", "fused", "continued", "live"], env))
    steps.update({f"evaluate_{k}": v for k, v in harness.run_recipe(
        CTNMT, work, ["evaluate"],
        dict(env, SYSTEMS=" ".join(["baseline", EQUAL_TIME, *CTNMT_SYSTEMS]))).items()})
    steps.update({f"evaluate_fused_{k}": v for k, v in harness.run_recipe(
        FUSED, work, ["evaluate"], env).items()})
    report(args.mode, work, env, steps, start)


def report(mode, work, env, steps, start):
    """Score, time and compare the trained systems of ``work``; write the JSON and the plot."""
    from ptnmt_fairseq.common.scoring import ordered_hypotheses

    raw = work / "pair" / f"test.{SRC}-{TGT}.{TGT}"
    refs = harness.bert_references(raw, work / "tgt-vocab", work / "test.basic")
    decoded = [*SYSTEMS, EQUAL_TIME, "continued"]
    hyps, bleu, decode, decoded_tokens = {}, {}, {}, {}
    for name in decoded:
        text = (work / name / "test.gen").read_text(encoding="utf-8")
        hyps[name] = ordered_hypotheses(text, refs, subword="wordpiece")
        bleu[name] = harness.score_generate(text, refs, subword="wordpiece",
                                            tokenize="none").value
        decode[name], decoded_tokens[name] = decode_timing(work / name / "test.log")
    logs = {name: (work / name / "train.log").read_text() for name in TRAINED}
    training = {name: train_stats(text) for name, text in logs.items()}
    training[EQUAL_TIME] = train_stats((work / EQUAL_TIME / "train.log").read_text())
    significance = {f"{name}_vs_baseline": harness.paired_significance(
        hyps["baseline"], hyps[name], refs, tokenize="none") for name in SYSTEMS[1:]}
    significance.update({f"{name}_vs_{EQUAL_TIME}": harness.paired_significance(
        hyps[EQUAL_TIME], hyps[name], refs, tokenize="none") for name in CTNMT_SYSTEMS})
    significance["bert_fused_vs_continued"] = harness.paired_significance(
        hyps["continued"], hyps["bert_fused"], refs, tokenize="none")
    significance["continued_vs_baseline"] = harness.paired_significance(
        hyps["baseline"], hyps["continued"], refs, tokenize="none")
    ratios = {}
    for name in SYSTEMS[1:]:
        # BERT-fused's steps are compared with the continued baseline's: same start, same
        # optimiser, measured right after each other
        reference = "continued" if name == "bert_fused" else "baseline"
        ratios[f"{name}_over_baseline_step_time"] = ratio(training[name]["step_seconds"],
                                                          training[reference]["step_seconds"])
        ratios[f"{name}_over_baseline_decode_time"] = ratio(decode[name], decode["baseline"])
        # systems a few minutes old emit outputs of other lengths than the baseline: the time
        # per output token compares what one decoding step costs
        ratios[f"{name}_over_baseline_decode_time_per_token"] = ratio(
            decode[name] / decoded_tokens[name], decode["baseline"] / decoded_tokens["baseline"])
    ratios["bert_fused_cached_over_live_step_time"] = ratio(
        training["bert_fused"]["step_seconds"], training["bert_fused_live"]["step_seconds"])
    for name in SYSTEMS[1:]:
        ratios[f"{name}_minus_baseline_bleu"] = round(bleu[name] - bleu["baseline"], 2)
    for name in CTNMT_SYSTEMS:
        ratios[f"{name}_minus_equal_time_baseline_bleu"] = round(bleu[name] - bleu[EQUAL_TIME], 2)
    ratios["bert_fused_minus_continued_bleu"] = round(bleu["bert_fused"] - bleu["continued"], 2)
    result = {
        "setup": {
            "corpus": f"gettext {SRC}->{TGT}", "mode": mode,
            "device": harness.device_description(),
            "train_pairs": harness.count_lines(work / "pair" / f"train.{SRC}-{TGT}.{TGT}"),
            "test_sentences": len(refs),
            "source_bert": f"{MINILM} (source vocabulary too)",
            "target_vocabulary": "cased WordPiece, 8000, learned on the training targets",
            "arch": "3+3 layers, d256, FFN 1024, 4 heads, pre-norm (every system)",
            "lr": env["LR"], "warmup": env["WARMUP"], "max_tokens": env["MAX_TOKENS"],
            "label_smoothing": 0.1, "seed": 1, "train_extra": env["TRAIN_EXTRA"],
            "ctnmt": {"distill_alpha": 0.9, "fusion_layer": -2,
                      "rate": f"slanted, T' {env['RATE_WARMUP']}, T {env['RATE_TOTAL']} updates"},
            "bert_fused": {"p_net": 1.0, "lr": env["FUSED_LR"], "warmup": env["FUSED_WARMUP"],
                           "warm_start": "baseline/checkpoint_best.pt"},
            "budget": (f"{env['MINUTES']} min per CTNMT system and the equal-time baseline, "
                       f"main baseline {MAIN_BUDGET['standard']['MINUTES']} min, BERT-fused and "
                       f"continued {env['FUSED_MINUTES']} min" if "MINUTES" in env
                       else f"{env['MAX_UPDATE']} updates per CTNMT system and the equal-time "
                            f"baseline, main baseline {MAIN_BUDGET['quick']['MAX_UPDATE']}, "
                            f"BERT-fused and continued {env['FUSED_UPDATES']}"),
            "decoding": f"beam {env['BEAM']}, lenpen {env['LENPEN']}, {env['GEN_EXTRA']}",
            "checkpoint": "checkpoint_best.pt (lowest valid label-smoothed loss)",
            "bleu": harness.scoring_description(
                hypotheses="WordPiece-joined H- lines", tokenize="none",
                references_name=f"the raw references (pair/test.{SRC}-{TGT}.{TGT}) in the "
                                "target vocabulary's basic tokenisation (cased)"),
            "significance": harness.SIGNIFICANCE,
            "step_time": "1 / median ups of the train_inner lines; BERT-fused's ratio is over "
                         "the continued baseline's (same start, optimiser and budget)",
            "decode_time": "fairseq-generate's 'Translated ... in S s' of the test split; "
                           "per token: S over the output tokens it reports",
        },
        "ratios": ratios,
        "bleu": bleu,
        "significance": significance,
        "decode_seconds": decode,
        "decoded_tokens": decoded_tokens,
        "training": training,
        "updates": {name: training[name]["updates"] for name in [*TRAINED, EQUAL_TIME]},
        "valid_nll_curve": {name: harness.valid_nll_curve(logs[name])
                            for name in ["baseline", *CTNMT_SYSTEMS, "bert_fused", "continued"]},
        "step_wall_s": harness.wall_seconds(steps),
    }
    harness.write_results("bert_in_nmt", mode, result, PAPER, start)
    plot(result)


if __name__ == "__main__":
    main()
