#!/usr/bin/env python3
"""Chimera benchmark on synthesised En->Fr speech (espeak-ng over gettext), CPU.

In one run, on the same data, front-end and seed (recipes/chimera/run.sh and, for XSTNet,
recipes/xstnet/run.sh):
1. ST BLEU (case-sensitive sacreBLEU 13a of the detokenised D- lines of fairseq-generate, beam
   5, against the raw translations, tgt_text of the test manifest) on the test split of:
   - ``chimera``: stage 1 MT pre-training through the memory (the triples' text + external MT),
     then stage 2 ST + MT + contrastive with external MT kept in the mix;
   - ``chimera_without_mt``: ST + MT + contrastive on the triples alone (no external MT, no
     stage 1), for the minutes (standard) or updates (quick) of both stages together;
   - ``chimera`` again for each memory size M of ``MEMORY_SIZES`` (the whole two-stage pipeline
     per M; the main system is the authors' M = 64);
   - ``xstnet``: XSTNet's stage 1 and stage 2 (ST + ASR + MT, external MT) with the same budgets.
   ``significance``: sacreBLEU's paired bootstrap of Chimera (M = 64) against the system without
   external MT and against XSTNet, and of each other M against M = 64.
2. MT BLEU of every model's text path (stage 1 and stage 2), the same scoring against the same
   references; the stage-1 MT model is each pipeline's supervised baseline.
3. Training throughput (audio seconds per second of train_wall), updates reached, the valid
   loss curves, and the wall time of each recipe step.

Budgets: every stage 1 gets ``MINUTES_MT`` minutes, every stage 2 ``MINUTES_ST`` minutes
(standard; ``--stop-time-hours``, the updates reached reported), or ``MAX_UPDATE_MT`` /
``MAX_UPDATE_ST`` updates (quick), with the same batch sizes and learning-rate schedule. The
standard mode uses the filterbank front-end (a wav2vec 2.0 pre-trained for minutes learns nothing,
benchmarks/speech_frontends.py) and a 3+3-layer d256 model in bfloat16; the quick mode a small
wav2vec 2.0 pre-trained for 100 updates.

Writes benchmarks/results/chimera.json (``ratios.with_mt_minus_without_bleu``; ``bleu``: ST BLEU
per system and memory size) and benchmarks/results/chimera.png; works in
benchmarks/work/chimera/{quick,standard} (the corpus and wav2vec 2.0 are kept between runs, every
model is trained afresh; --fresh rebuilds everything).
Usage: benchmarks/chimera.py [--quick] [--fresh] [--work DIR]
"""
import time

import harness
from harness import REPO
from xstnet import STANDARD_MODEL, test_score, train_stats

CHIMERA = REPO / "recipes/chimera/run.sh"
XSTNET = REPO / "recipes/xstnet/run.sh"
MAIN_M = 64  # the authors' scripts
SETTINGS = {
    "quick": {"MAX_SPEECH": 400, "MAX_EVAL": 40, "MAX_TRAIN": 6000, "W2V_UPDATE": 100,
              "MAX_UPDATE_MT": 100, "MAX_UPDATE_ST": 100, "MEMORY_SIZES": [16, 64]},
    # More minutes for MT than for ST: no speech model aligns in minutes on 2 cores (the
    # XSTNet and speech front-end benchmarks), while MT does, and stage 1 is where M matters.
    "standard": {"MAX_SPEECH": 4000, "MAX_EVAL": 300, "SPEECH_FRONTEND": "fbank",
                 "MINUTES_MT": 4.5, "MINUTES_ST": 3, "MAX_UPDATE_MT": 100000,
                 "MAX_UPDATE_ST": 100000, "WARMUP_MT": 300, "WARMUP_ST": 300,
                 "MAX_TOKENS_TEXT": 2048, "LR_MT": "2e-3", "LR_ST": "2e-3",
                 "TRAIN_EXTRA": f"--bf16 {STANDARD_MODEL}", "MEMORY_SIZES": [16, 64]},
}
COMMON = {"SRC": "en", "TGT": "fr", "VOCAB_SIZE": 1000, "MAX_TOKENS": 400000,
          "MAX_TOKENS_TEXT": 2000, "EXTERNAL_MT_RATIO": 0.25, "BEAM": 5,
          "LR_MT": "1e-3", "LR_ST": "1e-3"}
# MuST-C tst-COMMON, case-sensitive detokenised sacreBLEU, from the authors' READMEs
# (Glaciohound/Chimera-ST, ReneeYe/XSTNet).
PAPER = {
    "chimera_bleu": {"en-de": 27.1, "en-fr": 35.6},
    "xstnet_base_bleu": {"en-de": 25.5, "en-fr": 36.0},
    "note": "GPU, wav2vec_small.pt, 6+6 layers d512, memory 64 x 3, WMT as external MT, "
            "beam 10, lenpen 1.5, 7-checkpoint average",
}


def linked_workdir(work, name):
    """work/NAME for another pipeline on the same data: data and w2v are links to work's."""
    sub = work / name
    sub.mkdir(parents=True, exist_ok=True)
    for shared in ("data", "w2v"):
        link = sub / shared
        if not link.exists() and (work / shared).exists():
            link.symlink_to(work / shared)
    return sub


def run_pipelines(work, env, sizes):
    """Every recipe step, timed: {label: Step}; returns it and {M: workdir}."""
    steps = {}
    for step, step_run in harness.run_recipe(CHIMERA, work, ["prepare", "w2v"], env).items():
        steps[step] = step_run
    dirs = {}
    for m in sizes:
        dirs[m] = work if m == MAIN_M else linked_workdir(work, f"m{m}")
        done = harness.run_recipe(CHIMERA, dirs[m], ["stage1", "stage2", "evaluate"],
                                  dict(env, MEMORY_SLOTS=m))
        steps.update({f"m{m}_{s}": r for s, r in done.items()})
    done = harness.run_recipe(CHIMERA, work, ["no_mt"], dict(env, MEMORY_SLOTS=MAIN_M))
    steps[f"m{MAIN_M}_no_mt"] = done["no_mt"]
    xstnet_env = dict(env, ARCH="xstnet_tiny")
    done = harness.run_recipe(XSTNET, linked_workdir(work, "xstnet"),
                              ["stage1", "stage2", "evaluate"], xstnet_env)
    steps.update({f"xstnet_{s}": r for s, r in done.items()})
    return steps, dirs


def generations(work, dirs):
    """{(system, M or None): {task: path of its test generation}}."""
    gens = {("chimera", m): {"st": d / "stage2/test.st.gen", "mt": d / "stage2/test.mt.gen",
                             "stage1_mt": d / "stage1/test.mt.gen"} for m, d in dirs.items()}
    gens[("chimera_without_mt", MAIN_M)] = {"st": work / "no_mt/test.st.gen",
                                            "mt": work / "no_mt/test.mt.gen"}
    xstnet = work / "xstnet"
    gens[("xstnet", None)] = {"st": xstnet / "stage2/test.st.gen",
                              "mt": xstnet / "stage2/test.mt.gen",
                              "stage1_mt": xstnet / "stage1/test.mt.gen"}
    return gens


def by_system(scores):
    """{(system, M): value} -> {system: {"m<M>" or "no_memory": value}}."""
    table = {}
    for (system, m), value in scores.items():
        table.setdefault(system, {})["no_memory" if m is None else f"m{m}"] = value
    return table


def significance(work, gens, sizes):
    refs = harness.references(work / "data/test.tsv", "tgt_text")
    hyps = {key: harness.detokenized_hypotheses(paths["st"], refs) for key, paths in gens.items()}
    main = hyps[("chimera", MAIN_M)]
    result = {
        "chimera_vs_without_mt/st": harness.paired_significance(
            hyps[("chimera_without_mt", MAIN_M)], main, refs),
        "chimera_vs_xstnet/st": harness.paired_significance(hyps[("xstnet", None)], main, refs),
    }
    for m in sizes:
        if m != MAIN_M:
            result[f"m{m}_vs_m{MAIN_M}/st"] = harness.paired_significance(
                main, hyps[("chimera", m)], refs)
    return result


def valid_st_loss_curve(log_path):
    """[[updates, valid st_loss]] at the end of each epoch of a fairseq-train log."""
    return [[int(v["num_updates"]), v["st_loss"]]
            for v in harness.epoch_lines(log_path.read_text(), "valid") if "st_loss" in v]


def plot(result, sizes):
    setup = result["setup"]
    size = "3+3 layers d256 bf16" if "--bf16" in setup["model"] else "2+2 layers d128"
    title = (f"Chimera vs XSTNet, espeak-ng en->fr, {setup['train_triples']} triples, {size}, "
             f"{setup['speech_frontend']} ({setup['mode']})")
    st = result["bleu"]
    with harness.figure("chimera", 3, title, size=(14, 4)) as axes:
        main = f"m{MAIN_M}"
        harness.bars(axes[0], {"chimera": st["chimera"][main],
                               "without ext. MT": st["chimera_without_mt"][main],
                               "xstnet": st["xstnet"]["no_memory"]},
                     f"ST BLEU, {setup['test_sentences']} test sentences", ylabel="sacreBLEU",
                     color=["tab:blue", "tab:gray", "tab:orange"])
        harness.grouped_bars(axes[1], [f"M={m}" for m in sizes],
                             {"ST": [st["chimera"][f"m{m}"] for m in sizes],
                              "MT (stage 2)": [result["mt_bleu"]["chimera"][f"m{m}"] for m in sizes],
                              "MT (stage 1)": [result["stage1_mt_bleu"]["chimera"][f"m{m}"]
                                               for m in sizes]})
        axes[1].axhline(result["stage1_mt_bleu"]["xstnet"]["no_memory"], color="tab:orange",
                        linestyle="--", label="XSTNet MT (stage 1)")
        axes[1].legend()
        axes[1].set_title("Chimera BLEU by memory size M")
        for name, curve in result["valid_st_loss_curve"].items():
            axes[2].plot([c[0] for c in curve], [c[1] for c in curve], marker="o", label=name)
        axes[2].set_title("valid ST loss, bits per token (ST-stage models)")
        axes[2].set_xlabel("updates")
        axes[2].legend(fontsize=7)


def main():
    args = harness.parse_args(__doc__, "chimera", "also rebuild the corpus and wav2vec 2.0")
    settings = dict(SETTINGS[args.mode])
    sizes = settings.pop("MEMORY_SIZES")
    assert MAIN_M in sizes, f"the sweep {sizes} must include the main memory size {MAIN_M}"
    env = dict(COMMON, ARCH="chimera_tiny", **settings)
    work = args.work
    harness.prepare_work(work, args.fresh, ["stage1", "stage2", "no_mt", "xstnet"] +
                         [f"m{m}" for m in sizes if m != MAIN_M])
    start = time.monotonic()
    steps, dirs = run_pipelines(work, env, sizes)

    gens = generations(work, dirs)
    scores = {key: {task: test_score(work, path.relative_to(work)) for task, path in paths.items()}
              for key, paths in gens.items()}
    sentences = {s["st"].sentences for s in scores.values()}
    assert len(sentences) == 1, f"systems decoded different test sets: {scores}"
    st = by_system({key: s["st"].value for key, s in scores.items()})
    logs = {f"chimera_m{m}_stage1": d / "stage1/train.log" for m, d in dirs.items()}
    logs.update({f"chimera_m{m}_stage2": d / "stage2/train.log" for m, d in dirs.items()})
    logs.update({f"chimera_without_mt_m{MAIN_M}": work / "no_mt/train.log",
                 "xstnet_stage1": work / "xstnet/stage1/train.log",
                 "xstnet_stage2": work / "xstnet/stage2/train.log"})
    stats = {name: train_stats(path) for name, path in logs.items()}
    data = work / "data"
    main_key = f"m{MAIN_M}"
    result = {
        "setup": {
            "corpus": "gettext en->fr, English speech by espeak-ng (16 kHz)", "mode": args.mode,
            "model": "chimera_tiny / xstnet_tiny" + (f" with {env['TRAIN_EXTRA']}"
                                                      if "TRAIN_EXTRA" in env else ""),
            "speech_frontend": env.get("SPEECH_FRONTEND", "wav2vec2"),
            "w2v": (f"pretrain_wav2vec2.sh, EMBED_DIM 64, {env['W2V_UPDATE']} updates"
                    if env.get("SPEECH_FRONTEND") != "fbank" else None),
            "memory_sizes": sizes, "main_memory_size": MAIN_M, "vocab": env["VOCAB_SIZE"],
            "train_triples": harness.count_lines(data / "train.tsv") - 1,
            "external_mt_pairs": harness.count_lines(data / "train_mt.tsv") - 1,
            "test_sentences": sentences.pop(), "max_tokens_samples": env["MAX_TOKENS"],
            "max_tokens_text": env["MAX_TOKENS_TEXT"],
            "external_mt_ratio": env["EXTERNAL_MT_RATIO"],
            "lr": {"mt": env["LR_MT"], "st": env["LR_ST"]}, "beam": env["BEAM"], "seed": 1,
            "loss": "chimera: ST + MT + contrastive (1:1:1, tau 0.1); xstnet: ST + ASR + MT",
            "checkpoint": "checkpoint_best.pt (lowest valid loss; validation once per epoch)",
            "budget": (f"every stage 1 {env['MINUTES_MT']} min, every stage 2 "
                       f"{env['MINUTES_ST']} min, chimera_without_mt both (--stop-time-hours)"
                       if "MINUTES_ST" in env else
                       f"every stage 1 {env['MAX_UPDATE_MT']} updates, every stage 2 "
                       f"{env['MAX_UPDATE_ST']} updates, chimera_without_mt both"),
            "significance": harness.SIGNIFICANCE,
            "bleu": harness.scoring_description(
                references_name="the raw references (test.tsv tgt_text)"),
            "device": harness.device_description(),
        },
        "ratios": {
            "with_mt_minus_without_bleu": round(
                st["chimera"][main_key] - st["chimera_without_mt"][main_key], 2),
            "chimera_minus_xstnet_bleu": round(
                st["chimera"][main_key] - st["xstnet"]["no_memory"], 2),
            **{f"m{m}_minus_m{MAIN_M}_bleu": round(st["chimera"][f"m{m}"] - st["chimera"][main_key], 2)
               for m in sizes if m != MAIN_M},
        },
        "significance": significance(work, gens, sizes),
        "bleu": st,
        "mt_bleu": by_system({key: s["mt"].value for key, s in scores.items()}),
        "stage1_mt_bleu": by_system({key: s["stage1_mt"].value for key, s in scores.items()
                                     if "stage1_mt" in s}),
        "updates": {name: s["updates"] for name, s in stats.items()},
        "throughput_audio_s_per_s": {name: s["audio_s_per_s"] for name, s in stats.items()
                                     if "stage1" not in name},
        "training": stats,
        "valid_st_loss_curve": {name: valid_st_loss_curve(path) for name, path in logs.items()
                                if "stage1" not in name},
        "step_wall_s": harness.wall_seconds(steps),
    }
    harness.write_results("chimera", args.mode, result, PAPER, start)
    plot(result, sizes)


if __name__ == "__main__":
    main()
