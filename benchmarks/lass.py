#!/usr/bin/env python3
"""LaSS benchmark on gettext en<->ro (low), en<->de (medium), en<->fr (rich) and a new pair
en<->nl (CPU): the multilingual baseline against LaSS, zero-shot, decoding speed, step time and
forgetting when a pair is added.

One run of recipes/lass/run.sh (all steps) on one corpus, vocabulary and seed:
  - ``base``: the multilingual Transformer on the six directions (temperature sampling T=2);
  - ``ft.<direction>``: each direction fine-tuned alone from base (mask finding only);
  - masks: per-tensor magnitude pruning at ALPHA of each fine-tuned model;
  - ``lass``: base trained on with the masks, one direction per batch (``translation_lass``);
  - ``base_cont``: base trained on densely with the same budget (minutes in the standard mode,
    updates in the quick one), learning rate and schedule: the baseline LaSS is compared with;
  - ``lass_new``: en-nl and nl-en added to lass as new sub-networks, trained only outside the six
    directions' masks; ``plain_new``: base_cont fine-tuned densely on en-nl, nl-en with the same
    budget (the usual way to add a pair, and what forgets).
Measured:
1. BLEU of every direction and of the zero-shot de-fr, fr-de (multi-way test set) for base_cont
   and lass: case-sensitive sacreBLEU 13a of the detokenised D- lines of fairseq-generate (beam 5)
   against the raw target text of the first MAX_EVAL test lines; ``significance``: sacreBLEU's
   paired bootstrap (1000 resamples) per resource group (both directions pooled), over all six
   directions, and zero-shot.
2. Forgetting: the six directions' BLEU after the new pair, lass_new against lass and plain_new
   against base_cont, and the new pair's BLEU; whether lass_new's outputs on the six directions
   are identical to lass's.
3. Decoding speed, in-process: lass materialised for de-en against the dense base_cont, beam 5,
   batch 1, each sentence made to emit its reference's token count (min_len = max_len), so both
   do the same work whatever they predict; interleaved rounds, median seconds per sentence.
4. Training step time: train_wall / updates of lass against base_cont (their logs, one run).
5. The masks' analysis (ptnmt_fairseq.lass.analyze): IoU between directions, language-specific
   fraction per layer and module type.

Writes benchmarks/results/lass.json, benchmarks/results/lass.png and the analysis PNGs
(benchmarks/results/lass_iou.png, lass_specific.png); works in benchmarks/work/lass/{quick,
standard} (corpus kept between runs, every model trained afresh; --fresh rebuilds everything).
Usage: benchmarks/lass.py [--quick] [--fresh] [--work DIR]
"""
import json
import shutil
import sys
import time

import harness
from harness import REPO
from mrasp import STANDARD_ARCH, bleu, pooled, significance, train_stats

RECIPE = REPO / "recipes/lass/run.sh"
STEPS = ["prepare", "base", "finetune", "masks", "lass", "baseline", "evaluate", "analyze",
         "newpair"]
GROUPS = {"low (ro)": ["en-ro", "ro-en"], "medium (de)": ["en-de", "de-en"],
          "rich (fr)": ["en-fr", "fr-en"]}
DIRECTIONS = [d for group in GROUPS.values() for d in group]
ZEROSHOT = ["de-fr", "fr-de"]
NEW = ["en-nl", "nl-en"]
MODELS = ["base", "lass", "base_cont", "lass_new", "plain_new"] + [
    f"ft.{d}" for d in DIRECTIONS + NEW]
SETTINGS = {
    # 626 s with 300 base updates and 40 test lines: 32 fairseq-generate start-ups dominate
    "quick": {"TRAIN_SIZES": "ro=1500 de=3000 fr=6000 nl=1500", "VOCAB_SIZE": 2000,
              "MAX_UPDATE_BASE": 250, "MAX_UPDATE_FT": 20, "MAX_UPDATE_LASS": 100,
              "MAX_UPDATE_NEW": 60, "MAX_EVAL": 20, "TIMING_SENTENCES": 20},
    # Sized to 45 minutes on 2 cores: base 16.5 min (bf16), six 15-s fine-tunings (lr 1e-3, so
    # that the masks can part), 4.5 min each for lass and base_cont (fp32: the masked update
    # keeps fp32 weights), 1.5 min each for the new pair, and the first 200 test lines of each
    # direction decoded by 4 systems (32 fairseq-generate runs). A run with base 13 min and
    # 2 min for the new pair took 40.3 min and left base_cont at fr-en 9.39.
    "standard": {"TRAIN_SIZES": "ro=3000 de=10000", "VOCAB_SIZE": 8000, "ARCH_ARGS": STANDARD_ARCH,
                 "LR_BASE": "2e-3", "WARMUP_BASE": 200, "MINUTES_BASE": 16.5,
                 "MAX_UPDATE_BASE": 100000, "BASE_EXTRA": "--bf16",
                 "MINUTES_FT": 0.25, "MAX_UPDATE_FT": 100000, "WARMUP_FT": 10, "LR_FT": "1e-3",
                 "MINUTES_LASS": 4.5, "MAX_UPDATE_LASS": 100000, "WARMUP_LASS": 50,
                 "LR_LASS": "5e-4", "MINUTES_NEW": 1.5, "MAX_UPDATE_NEW": 100000, "WARMUP_NEW": 50,
                 "MAX_TOKENS": 2048, "MAX_EVAL": 200, "TIMING_SENTENCES": 40},
}
# Bounded decoding (as the AB-Net benchmark): an undertrained model's repetition loops would
# otherwise run to fairseq's 200-token cap and dominate the run's time.
COMMON = {"LANGS": "ro de fr", "NEW_LANG": "nl", "ZERO_SHOT": " ".join(ZEROSHOT), "ALPHA": 0.3,
          "BEAM": 5, "GEN_EXTRA": "--max-len-a 1.2 --max-len-b 10"}
# Lin et al., ACL 2021 (abstract and tutorial, part III); NLP-Playground/LaSS issue #7 for the
# IWSLT baseline.
PAPER = {
    "lass_minus_base_bleu": "up to +1.2 BLEU on 36 pairs (WMT), larger for rich-resource pairs",
    "zero_shot_gain_bleu": "+8.3 average on 30 pairs",
    "new_pair": "reaches the bilingual model with fewer steps; existing pairs hardly drop",
    "analysis": "top/bottom layers the most language-specific; mask similarity follows language "
                "family",
    "iwslt_baseline_bleu": {"fa": 16.9, "he": 29.0, "pl": 16.4, "it": 29.2, "ar": 20.9, "es": 35.2,
                            "de": 28.1, "nl": 30.9},
    "note": "IWSLT 8 languages <-> en (transformer_iwslt_de_en) and WMT (Transformer base/big), "
            "GPUs, 160k updates",
}


def reference_file(work, n, direction):
    return work / "data" / f"t{n}.{direction}.{direction.split('-')[1]}"


def outputs(work, n):
    """{model: {direction: (hypotheses, references)}} of every decoded direction."""
    decoded = {"base_cont": DIRECTIONS + ZEROSHOT, "lass": DIRECTIONS + ZEROSHOT,
               "lass_new": DIRECTIONS + NEW, "plain_new": DIRECTIONS + NEW}
    found = {}
    for model, directions in decoded.items():
        found[model] = {}
        for d in directions:
            refs = harness.references(reference_file(work, n, d))
            gen = work / model / f"t{n}.{d}.gen"
            found[model][d] = (harness.detokenized_hypotheses(gen, refs), refs)
    return found


COMPARISONS = {  # name: (baseline model, system model, directions pooled)
    "lass_vs_base/all": ("base_cont", "lass", DIRECTIONS),
    **{f"lass_vs_base/{g}": ("base_cont", "lass", ds) for g, ds in GROUPS.items()},
    **{f"lass_vs_base/{d}": ("base_cont", "lass", [d]) for d in DIRECTIONS},
    "lass_vs_base/zero-shot": ("base_cont", "lass", ZEROSHOT),
    "forgetting/lass_new_vs_lass": ("lass", "lass_new", DIRECTIONS),
    "forgetting/plain_new_vs_base_cont": ("base_cont", "plain_new", DIRECTIONS),
    "new_pair/lass_new_vs_plain_new": ("plain_new", "lass_new", NEW),
}


def load_for_decoding(checkpoint, data, direction):
    """(model, task) as fairseq-generate loads them for ``direction``: the task from the
    checkpoint with -s/-t, the model prepared for inference (LaSS: the mask materialised)."""
    from fairseq import checkpoint_utils
    from omegaconf import OmegaConf

    import ptnmt_fairseq  # noqa: F401  (the compat fixes and the LaSS registrations)

    src, tgt = direction.split("-")
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoint)], arg_overrides={"data": str(data), "source_lang": src,
                                          "target_lang": tgt})
    model = models[0].eval()
    OmegaConf.set_struct(cfg, False)
    cfg.generation = OmegaConf.create({"beam": 5})
    model.prepare_for_inference_(cfg)
    return model, task


def forced_decode_seconds(model, task, samples, lengths):
    """Seconds of beam search (beam 5, batch 1) over ``samples``, each made to emit
    ``lengths[id]`` tokens (min_len = max_len)."""
    import torch
    from fairseq.sequence_generator import SequenceGenerator

    seconds = 0.0
    with torch.no_grad():
        for sample in samples:
            n = lengths[int(sample["id"][0])]
            generator = SequenceGenerator([model], task.target_dictionary, beam_size=5,
                                          max_len_a=0, max_len_b=n, min_len=n)
            start = time.perf_counter()
            task.inference_step(generator, [model], sample)
            seconds += time.perf_counter() - start
    return seconds


def decode_speed(work, direction, sentences, rounds=4):
    """Median seconds per sentence of lass (materialised) and base_cont (dense), interleaved."""
    import torch

    torch.set_num_threads(1)  # like one fairseq-generate worker: the ratio, not the speed, counts
    systems = {name: load_for_decoding(work / name / "checkpoint_best.pt", work / "data", direction)
               for name in ("base_cont", "lass")}
    task = systems["lass"][1]
    task.load_dataset("test")
    dataset = task.dataset("test")
    samples = [dataset.collater([dataset[i]]) for i in range(sentences)]
    lengths = {i: len(dataset[i]["target"]) for i in range(sentences)}
    per_round = {name: [] for name in systems}
    for _ in range(rounds + 1):  # the first round warms up, and is dropped
        for name, (model, _task) in systems.items():
            per_round[name].append(forced_decode_seconds(model, task, samples, lengths) / sentences)
    median = {name: harness.median(values[1:]) for name, values in per_round.items()}
    return {"direction": direction, "sentences": sentences, "rounds": rounds,
            "median_s_per_sentence": {k: round(v, 5) for k, v in median.items()},
            "per_round_s_per_sentence": {k: [round(v, 5) for v in vs[1:]]
                                         for k, vs in per_round.items()},
            "masked_over_dense_speed": round(median["base_cont"] / median["lass"], 4),
            "note": "batch 1, beam 5, one thread, each sentence emitting its reference's token "
                    "count; lass = transformer_lass with de-en's mask materialised "
                    "(prepare_for_inference_), base_cont = fairseq's transformer, same shape"}


def step_time(stats):
    per_update = {m: stats[m]["train_wall_s"] / stats[m]["updates"] for m in ("lass", "base_cont")}
    return round(per_update["lass"] / per_update["base_cont"], 4), per_update


def plot(result):
    setup = result["setup"]
    title = (f"LaSS vs multilingual baseline, gettext ro (low) de (medium) fr (rich) <-> en; "
             f"{setup['budget']} ({setup['mode']})")
    colors = {"base_cont": "tab:gray", "lass": "tab:blue", "plain_new": "tab:orange",
              "lass_new": "tab:green"}
    with harness.figure("lass", 3, title, size=(18, 4.6)) as axes:
        shown = DIRECTIONS + ZEROSHOT
        harness.grouped_bars(axes[0], [d + ("\n(0-shot)" if d in ZEROSHOT else "") for d in shown],
                             {s: [result["bleu"][s][d] for d in shown]
                              for s in ("base_cont", "lass")}, colors)
        axes[0].set_ylabel("sacreBLEU")
        delta = result["ratios"]["lass_minus_base_bleu"]
        axes[0].set_title(f"BLEU per direction (LaSS - base, mean {delta:+.2f})")
        forget = result["forgetting"]
        harness.grouped_bars(axes[1], ["six directions\n(before -> after)", "new pair"], {
            "plain fine-tuning": [forget["plain_new_minus_base_cont_bleu"],
                                  result["bleu_pooled"]["plain_new"]["new"]],
            "LaSS new sub-network": [forget["lass_new_minus_lass_bleu"],
                                     result["bleu_pooled"]["lass_new"]["new"]]},
            {"plain fine-tuning": "tab:orange", "LaSS new sub-network": "tab:green"})
        axes[1].axhline(0, color="black", linewidth=0.5)
        axes[1].set_title("Adding en<->nl: BLEU change of the six, and the new pair's BLEU")
        ratios = result["ratios"]
        harness.bars(axes[2], {
            "decode speed\nmasked / dense": ratios["masked_over_dense_decode_speed"],
            "step time\nlass / base": ratios["lass_over_base_step_time"]},
            "Speed ratios (1 = the same)", color=["tab:blue", "tab:purple"])
        axes[2].axhline(1, color="black", linewidth=0.5)


def main():
    args = harness.parse_args(__doc__, "lass", "also rebuild the corpus")
    settings = dict(SETTINGS[args.mode])
    timing_sentences = settings.pop("TIMING_SENTENCES")
    env = dict(COMMON, **settings)
    work = args.work
    harness.prepare_work(work, args.fresh, MODELS + ["masks", "analysis"])
    start = time.monotonic()
    steps = harness.run_recipe(RECIPE, work, STEPS, env)
    n = env["MAX_EVAL"]
    speed, steps["decode_speed"] = harness.timed(decode_speed, work, "de-en", timing_sentences)

    found = outputs(work, n)
    scores = {m: {d: bleu(v) for d, v in dirs.items()} for m, dirs in found.items()}
    sig = significance(found, COMPARISONS)
    stats = {m: train_stats(work / m / "train.log")
             for m in ("base", "lass", "base_cont", "lass_new", "plain_new")}
    step_ratio, per_update = step_time(stats)
    analysis = json.loads((work / "analysis" / "analysis.json").read_text())
    for name in ("iou", "specific"):
        shutil.copyfile(work / "analysis" / f"{name}.png", harness.RESULTS / f"lass_{name}.png")
    mean = lambda model, ds: round(sum(scores[model][d] for d in ds) / len(ds), 2)  # noqa: E731
    identical = all(found["lass_new"][d][0] == found["lass"][d][0] for d in DIRECTIONS)
    data = work / "data"
    budget = (f"base {env['MINUTES_BASE']} min, lass and base_cont {env['MINUTES_LASS']} min each, "
              f"new pair {env['MINUTES_NEW']} min each (--stop-time-hours)"
              if "MINUTES_BASE" in env else
              f"base {env['MAX_UPDATE_BASE']} updates, lass and base_cont "
              f"{env['MAX_UPDATE_LASS']}, "
              f"new pair {env['MAX_UPDATE_NEW']}")
    result = {
        "setup": {
            "corpus": "gettext catalogs, English-centric; training pairs capped per language "
                      f"({env['TRAIN_SIZES']}); zero-shot de-fr, fr-de from the multi-way test set",
            "mode": args.mode,
            "train_pairs": {lang: harness.count_lines(data / f"train.en-{lang}.en")
                            for lang in ("ro", "de", "fr", "nl")},
            "test_sentences": {d: len(v[1]) for d, v in
                               {**found["base_cont"], **found["lass_new"]}.items()},
            "arch": env.get("ARCH_ARGS", "transformer 2+2 layers, d128, FFN 512, 4 heads, "
                                         "shared embeddings (the recipe's default)"),
            "vocab": f"joint sentencepiece unigram {env['VOCAB_SIZE']} over en ro de fr nl "
                     "+ LANG_TOK_XX",
            "alpha": env["ALPHA"], "output_projection": "masked per direction (the default)",
            "budget": budget, "base_extra": env.get("BASE_EXTRA", ""),
            "max_tokens": env.get("MAX_TOKENS", 2000), "lr_base": env.get("LR_BASE", "1e-3"),
            "lr_lass": env.get("LR_LASS", "5e-4"),
            "schedule": "inverse_sqrt, Adam (0.9, 0.98), label smoothing 0.1, temperature "
                        "sampling T=2; lass/base_cont/new pair from a fresh optimizer "
                        "(--finetune-from-model), as the authors' mask stage",
            "beam": env["BEAM"], "decoding": env["GEN_EXTRA"], "seed": 1,
            "checkpoint": "checkpoint_best.pt (lowest valid loss)",
            "bleu": harness.scoring_description(
                references_name=f"the raw references of the first {n} test lines"),
            "significance": (harness.SIGNIFICANCE
                             + "; pooled: the directions' test sets concatenated"),
            "device": harness.device_description(),
        },
        "ratios": {
            "masked_over_dense_decode_speed": speed["masked_over_dense_speed"],
            "lass_over_base_step_time": step_ratio,
            "lass_minus_base_bleu": round(mean("lass", DIRECTIONS) - mean("base_cont", DIRECTIONS),
                                          2),
            "lass_minus_base_zeroshot_bleu": round(mean("lass", ZEROSHOT)
                                                   - mean("base_cont", ZEROSHOT), 2),
        },
        "bleu": scores,
        "bleu_mean": {m: {"six": mean(m, DIRECTIONS)} for m in scores},
        "bleu_pooled": {
            **{m: {"all": bleu(pooled(found, m, DIRECTIONS)),
                   **{g: bleu(pooled(found, m, ds)) for g, ds in GROUPS.items()},
                   "zero_shot": bleu(pooled(found, m, ZEROSHOT))} for m in ("base_cont", "lass")},
            **{m: {"all": bleu(pooled(found, m, DIRECTIONS)), "new": bleu(pooled(found, m, NEW))}
               for m in ("lass_new", "plain_new")}},
        "significance": sig,
        "forgetting": {
            "lass_new_minus_lass_bleu": round(mean("lass_new", DIRECTIONS)
                                              - mean("lass", DIRECTIONS), 2),
            "plain_new_minus_base_cont_bleu": round(mean("plain_new", DIRECTIONS)
                                                    - mean("base_cont", DIRECTIONS), 2),
            "lass_new_outputs_identical_to_lass": identical,
        },
        "decode_speed": speed,
        "step_time_s_per_update": {k: round(v, 4) for k, v in per_update.items()},
        "analysis": analysis,
        "training": stats,
        "updates": {m: stats[m]["updates"] for m in stats},
        "step_wall_s": harness.wall_seconds(steps),
    }
    harness.write_results("lass", args.mode, result, PAPER, start)
    plot(result)


if __name__ == "__main__":
    sys.exit(main())
