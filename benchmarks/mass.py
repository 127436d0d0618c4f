#!/usr/bin/env python3
"""MASS / CSP benchmark on gettext en<->de (CPU): does MASS (or CSP) pre-training on monolingual
text help low-resource translation, what does back-translation alone reach from it, and what does
the span-only decoder save?

In one run of recipes/mass/run.sh on one corpus, vocabulary, architecture (mass_tiny: 3+3
pre-norm layers, d256, shared embeddings, language embeddings) and seed:
  - ``mass``: MASS pre-training on monolingual en (the English of the first half of the training
    pairs) and de (the German of the second half), span 50%;
  - ``csp``: CSP pre-training on the same text with the FreeDict en-de/de-en lexicon (top 3), for
    the updates ``mass`` reached (equal steps);
  - ``lowres_<N>``: en-de on the first N training pairs, from scratch, from mass and from csp,
    with one fine-tuning budget each (the standard mode: the same minutes; quick: the same updates);
  - ``full_scratch``: en-de on all training pairs from scratch, the main supervised baseline;
  - ``unsup_mass``: mass fine-tuned by on-the-fly back-translation of the monolingual text only,
    decoded en-de and de-en beside mass itself (before back-translation);
  - ``wps_span`` / ``wps_masked``: short MASS pre-trainings with the span-only decoder and with
    the whole-length decoder ([M] outside the span, the same loss and batches), one after the other.
Measured:
1. BLEU of every system: case-sensitive sacreBLEU 13a of the detokenised D- lines of
   fairseq-generate (beam 5) against the raw target text (never fairseq's T- lines); the standard
   mode decodes the whole test split, the quick mode its first MAX_EVAL lines.
2. ``significance``: sacreBLEU's paired bootstrap (1000 resamples) of mass and csp against scratch
   at each low-resource size, csp against mass, and unsup_mass against mass.
3. Dev NLL curves of every fine-tuning (validation every VALID_EVERY updates).
4. Pre-training words/s (fairseq's wps: span tokens per second, the same count in both) with and
   without the span-only decoder: median of the train_inner lines, ratio span / masked.

Writes benchmarks/results/mass.json and benchmarks/results/mass.png; works in
benchmarks/work/mass/{quick,standard} (corpus and dictionaries kept between runs, every model
trained afresh; --fresh rebuilds everything).
Usage: benchmarks/mass.py [--quick] [--fresh] [--work DIR]
"""
import time

import harness
from harness import REPO

RECIPE = REPO / "recipes/mass/run.sh"
PAIR = "en-de"
SETTINGS = {
    "quick": {"MAX_TRAIN": 6000, "LOWRES": "1000", "VOCAB_SIZE": 4000, "MAX_EVAL": 100,
              "MAX_UPDATE_PRE": 150, "WARMUP_PRE": 15, "MAX_UPDATE_FT": 60, "WARMUP_FT": 6,
              "MAX_UPDATE_BT": 15, "MAX_UPDATE_WPS": 30, "MAX_UPDATE_BASELINE": 100,
              "LR_PRE": "2e-3", "LR_FT": "1e-3", "LR_BT": "1e-4", "MAX_TOKENS": 2048,
              "VALID_EVERY": 20, "LOG_EVERY": 5,
              "ARCH_ARGS": "--arch mass_tiny --encoder-layers 2 --decoder-layers 2 "
                           "--encoder-embed-dim 128 --decoder-embed-dim 128 "
                           "--encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512"},
    # Sized so that two pre-trainings, three low-resource fine-tunings, the 13-minute main
    # baseline (10 minutes gave 7.19 BLEU after 780 updates; a run before, 1070 updates of the
    # same model gave 14.83 in the BERT-in-NMT benchmark), back-translation, the throughput pair and 8 whole-test decodings fit 45 minutes.
    # CSP runs mass's updates (capped at 10.5 minutes): its steps cost about twice MASS's here,
    # as its code-switched sources are longer and the longest one pads the batch.
    "standard": {"LOWRES": "5000", "VOCAB_SIZE": 8000, "MAX_EVAL": "all",
                 "MINUTES_PRE": 4.5, "MINUTES_CSP": 10.5, "MAX_UPDATE_PRE": 100000, "WARMUP_PRE": 200,
                 "MINUTES_FT": 2.75, "MAX_UPDATE_FT": 100000, "WARMUP_FT": 50,
                 "MINUTES_BT": 2, "MAX_UPDATE_BT": 100000, "MAX_UPDATE_WPS": 40,
                 "MINUTES_BASELINE": 13, "LR_PRE": "2e-3", "LR_FT": "1e-3", "LR_BT": "1e-4",
                 "MAX_TOKENS": 2048, "VALID_EVERY": 50, "LOG_EVERY": 10,
                 "ARCH_ARGS": "--arch mass_tiny"},
}
COMMON = {"FINETUNE_PAIR": PAIR, "BEAM": 5, "SPAN_RATIO": 0.5, "CSP_TOP_K": 3,
          "GEN_EXTRA": "--max-len-a 1.2 --max-len-b 10"}
PAPER = {
    "mass_unsupervised_table2": {"en-de": 28.3, "de-en": 35.2, "en-fr": 37.5, "fr-en": 34.9},
    "csp_unsupervised_table1": {"en-de": 28.7, "de-en": 35.7,
                                "mass_reproduced_en-de": 27.9, "mass_reproduced_de-en": 34.7},
    "mass_table6_unsupervised_en-fr": {"discrete": 36.9, "feed": 35.3, "mass": 37.5},
    "mass_low_resource": "Figure 3: MASS above no pre-training in all 6 directions at 10k, 100k "
                         "and 1M pairs (figure only)",
    "span_trick": "Sec. 4.1: removing the masked (padding) tokens from the decoder 'can reduce "
                  "50% computation in the decoder' with similar accuracy",
    "source": "Song et al., ICML 2019 (Tables 2, 6; Sec. 4.1); Yang et al., EMNLP 2020 (Table 1)",
}


def recipe_env(settings):
    env = dict(COMMON, **settings)
    env["TRAIN_EXTRA"] = (f"--bf16 --validate-interval-updates {env['VALID_EVERY']} "
                          f"--log-interval {env['LOG_EVERY']}")
    return {k: str(v) for k, v in env.items()}


def baseline_env(env):
    """The main baseline's budget (longer than a low-resource fine-tuning), validated half as
    often (its curve is long; each validation costs seconds of its budget)."""
    env = dict(env, TRAIN_EXTRA=env["TRAIN_EXTRA"].replace(
        f"--validate-interval-updates {env['VALID_EVERY']}",
        f"--validate-interval-updates {2 * int(env['VALID_EVERY'])}"))
    if "MINUTES_BASELINE" in env:
        return dict(env, MINUTES_FT=env["MINUTES_BASELINE"])
    return dict(env, MAX_UPDATE_FT=env["MAX_UPDATE_BASELINE"])


def systems(env):
    """The low-resource fine-tunings, ft_<init>_<N>."""
    return [f"ft_{init}_{n}" for n in env["LOWRES"].split() for init in ("scratch", "mass", "csp")]


def main():
    args = harness.parse_args(__doc__, "mass", "also rebuild the corpus and the dictionaries")
    env = recipe_env(SETTINGS[args.mode])
    work = args.work
    trained = ["mass", "csp", *systems(env), "full_scratch", "unsup_mass", "wps_span",
               "wps_masked"]
    harness.prepare_work(work, args.fresh, trained)
    start = time.monotonic()
    steps = harness.run_recipe(RECIPE, work, ["prepare", "trick", "pretrain", "csp", "lowres"],
                               env)
    steps.update(harness.run_recipe(RECIPE, work, ["baseline"], baseline_env(env)))
    steps.update(harness.run_recipe(RECIPE, work, ["unsup", "evaluate"], env))
    report(args.mode, work, env, steps, start, trained)


def train_stats(log_text):
    inner = harness.inner_lines(log_text)
    return {"updates": int(inner[-1]["num_updates"]) if inner else 0,
            "median_inner_wps": harness.median(r["wps"] for r in inner) if inner else None,
            "median_inner_ups": harness.median(r["ups"] for r in inner) if inner else None,
            "done_training_s": harness.done_training_seconds(log_text)}


def report(mode, work, env, steps, start, trained):
    data = work / "data"
    n = env["MAX_EVAL"]
    name = "test" if n == "all" else f"t{n}"
    refs = {pair: harness.references(data / f"{name}.{pair}.{pair.split('-')[1]}")
            for pair in ("en-de", "de-en")}
    hyps, bleu = {}, {}

    def decoded(system, pair):
        path = work / system / f"{name}.{pair}.gen"
        hyps[(system, pair)] = harness.detokenized_hypotheses(path, refs[pair])
        return harness.score_file(path, data / f"{name}.{pair}.{pair.split('-')[1]}").value

    sizes = env["LOWRES"].split()
    for size in sizes:
        bleu[f"lowres_{size}"] = {init: decoded(f"ft_{init}_{size}", PAIR)
                                  for init in ("scratch", "mass", "csp")}
    bleu["supervised_full"] = {"scratch": decoded("full_scratch", PAIR)}
    bleu["unsupervised"] = {f"{system} {pair}": decoded(system, pair)
                            for system in ("mass", "unsup_mass") for pair in ("en-de", "de-en")}

    def compare(base, system, pair=PAIR):
        return harness.paired_significance(hyps[(base, pair)], hyps[(system, pair)], refs[pair])

    significance = {}
    for size in sizes:
        significance[f"mass_vs_scratch_lowres_{size}"] = compare(f"ft_scratch_{size}",
                                                                 f"ft_mass_{size}")
        significance[f"csp_vs_scratch_lowres_{size}"] = compare(f"ft_scratch_{size}",
                                                                f"ft_csp_{size}")
        significance[f"csp_vs_mass_lowres_{size}"] = compare(f"ft_mass_{size}", f"ft_csp_{size}")
    for pair in ("en-de", "de-en"):
        significance[f"unsup_mass_vs_mass_{pair}"] = compare("mass", "unsup_mass", pair)
    logs = {system: (work / system / "train.log").read_text() for system in trained}
    training = {system: train_stats(text) for system, text in logs.items()}
    largest = f"lowres_{sizes[-1]}"
    wps_span, wps_masked = (training[s]["median_inner_wps"] for s in ("wps_span", "wps_masked"))
    ratios = {
        "mass_minus_scratch_lowres_bleu": round(bleu[largest]["mass"] - bleu[largest]["scratch"], 2),
        "csp_minus_scratch_lowres_bleu": round(bleu[largest]["csp"] - bleu[largest]["scratch"], 2),
        "csp_minus_mass_lowres_bleu": round(bleu[largest]["csp"] - bleu[largest]["mass"], 2),
        "span_trick_over_full_pretrain_wps": round(wps_span / wps_masked, 3),
        # pitfall 8 of the comparison: CSP and MASS at equal pre-training steps
        "csp_over_mass_pretrain_updates": round(training["csp"]["updates"]
                                                / training["mass"]["updates"], 3),
        "csp_over_mass_pretrain_step_time": round(training["mass"]["median_inner_ups"]
                                                  / training["csp"]["median_inner_ups"], 3),
        "unsup_mass_minus_mass_en-de_bleu": round(bleu["unsupervised"]["unsup_mass en-de"]
                                                  - bleu["unsupervised"]["mass en-de"], 2),
    }
    for size in sizes[:-1]:
        ratios[f"mass_minus_scratch_lowres_{size}_bleu"] = round(
            bleu[f"lowres_{size}"]["mass"] - bleu[f"lowres_{size}"]["scratch"], 2)
    result = {
        "setup": {
            "corpus": "gettext en<->de", "mode": mode, "device": harness.device_description(),
            "train_pairs": harness.count_lines(data / "train.en-de.en"),
            "monolingual": {lang: harness.count_lines(data / f"train.mono.{lang}")
                            for lang in ("en", "de")},
            "lowres_sizes": sizes, "test_sentences": len(refs[PAIR]),
            "arch": env["ARCH_ARGS"] + " (mass_tiny: 3+3 pre-norm layers, d256, FFN 1024, 4 "
                                       "heads, shared embeddings, language embeddings)",
            "vocabulary": f"joint sentencepiece {env['VOCAB_SIZE']} + LANG_TOK_EN/DE + <mask>",
            "pretraining": f"span ratio {env['SPAN_RATIO']}, lr {env['LR_PRE']}, warmup "
                           f"{env['WARMUP_PRE']}; csp: FreeDict top {env['CSP_TOP_K']}, the "
                           "updates mass reached",
            "finetuning": f"lr {env['LR_FT']}, warmup {env['WARMUP_FT']} (inverse_sqrt), weights "
                          "only (--finetune-from-model)",
            "back_translation": f"lr {env['LR_BT']} constant, greedy, eval mode, max len 1.3 x + 5",
            "budget": ({k: env[k] for k in ("MINUTES_PRE", "MINUTES_CSP", "MINUTES_FT", "MINUTES_BT",
                                            "MINUTES_BASELINE", "MAX_UPDATE_WPS") if k in env}
                       if "MINUTES_PRE" in env else
                       {k: env[k] for k in ("MAX_UPDATE_PRE", "MAX_UPDATE_FT", "MAX_UPDATE_BT",
                                            "MAX_UPDATE_BASELINE", "MAX_UPDATE_WPS")}),
            "max_tokens": env["MAX_TOKENS"], "label_smoothing": 0.1, "seed": 1,
            "train_extra": env["TRAIN_EXTRA"],
            "decoding": f"beam {env['BEAM']}, {env['GEN_EXTRA']}, checkpoint_best.pt",
            "bleu": harness.scoring_description(),
            "significance": harness.SIGNIFICANCE,
            "wps": "fairseq's wps (span tokens per second) of the train_inner lines, median; "
                   "the two runs read the same batches",
        },
        "ratios": ratios,
        "bleu": bleu,
        "significance": significance,
        "training": training,
        "updates": {system: training[system]["updates"] for system in trained},
        "valid_nll_curve": {system: harness.valid_nll_curve(logs[system])
                            for system in [*systems(env), "full_scratch", "unsup_mass"]},
        "step_wall_s": harness.wall_seconds(steps),
    }
    harness.write_results("mass", mode, result, PAPER, start)
    plot(result, sizes)


def plot(result, sizes):
    bleu, sig = result["bleu"], result["significance"]
    largest = f"lowres_{sizes[-1]}"
    title = (f"MASS/CSP, gettext en-de ({result['setup']['mode']}): at {sizes[-1]} pairs MASS "
             f"{result['ratios']['mass_minus_scratch_lowres_bleu']:+.2f} BLEU (p "
             f"{sig[f'mass_vs_scratch_lowres_{sizes[-1]}']['p']:.3f}), CSP "
             f"{result['ratios']['csp_minus_scratch_lowres_bleu']:+.2f} (p "
             f"{sig[f'csp_vs_scratch_lowres_{sizes[-1]}']['p']:.3f}) vs scratch")
    with harness.figure("mass", 4, title, size=(20, 4.6)) as axes:
        names = ["scratch", "mass", "csp"]
        groups = [f"lowres_{s}" for s in sizes]
        harness.grouped_bars(axes[0], groups, {n: [bleu[g][n] for g in groups] for n in names},
                             colors={"scratch": "tab:gray", "mass": "tab:blue",
                                     "csp": "tab:orange"})
        axes[0].set_ylabel("sacreBLEU")
        axes[0].set_title(f"Low-resource en-de ({result['setup']['test_sentences']} test "
                          f"sentences); full-data scratch {bleu['supervised_full']['scratch']}")
        harness.bars(axes[1], bleu["unsupervised"], "Unsupervised: before / after back-translation",
                     color="tab:green")
        axes[1].tick_params(axis="x", rotation=30)
        wps = {k: result["training"][k]["median_inner_wps"] for k in ("wps_span", "wps_masked")}
        harness.bars(axes[2], wps, f"Pre-training words/s (span/masked "
                                   f"{result['ratios']['span_trick_over_full_pretrain_wps']})",
                     color="tab:purple")
        for system, curve in result["valid_nll_curve"].items():
            if system.startswith("ft_") and system.endswith(sizes[-1]) or system == "full_scratch":
                axes[3].plot([u for u, _ in curve], [v for _, v in curve], "o-", label=system)
        axes[3].set_xlabel("updates")
        axes[3].set_ylabel("valid NLL (bits/token)")
        axes[3].set_title(f"Dev NLL of the fine-tunings ({largest})")
        axes[3].legend()


if __name__ == "__main__":
    main()
