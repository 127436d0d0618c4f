#!/usr/bin/env python3
"""XSTNet benchmark on synthesised En->Fr speech (espeak-ng over gettext) with a tiny wav2vec 2.0 (CPU).

In one run of recipes/xstnet/run.sh on the same data, the same wav2vec 2.0 and the same seed:
1. ST BLEU (case-sensitive detokenised sacreBLEU, sacrebleu.corpus_bleu on the D-/T- lines of
   fairseq-generate, beam 5) on the test split for three systems:
   - ``st_only``: ST alone (``--train-tasks st``), from wav2vec 2.0;
   - ``xstnet``: stage 1 MT pre-training (triples' text + external MT), then stage 2
     ``--train-tasks st,asr,mt`` with external MT;
   - ``cascade``: an ASR-only model (``--train-tasks asr``), its transcripts translated by the
     stage-1 MT model (the same model XSTNet starts from, trained once).
   Budget: the ST-only model, the ASR model and XSTNet's stage 2 get the same number of updates
   (``MAX_UPDATE_ST``, the same batch sizes and learning-rate schedule); XSTNet and the cascade
   both add the one stage-1 MT model (``MAX_UPDATE_MT`` text updates). XSTNet's stage-2 updates
   include its external-MT batches, so it sees less audio than ST-only in the same updates
   (``audio_seconds_seen``).
2. Training throughput in audio seconds per second: the ``audio_seconds`` and ``train_wall`` of
   the end-of-epoch ``train | epoch`` lines of each training log, summed over epochs.
3. ASR WER (lowercased, punctuation removed) of XSTNet and of the cascade's ASR model, MT BLEU of
   XSTNet and of the stage-1 model, and the wall time of each recipe step.

Writes benchmarks/results/xstnet.json and benchmarks/results/xstnet.png; works in
benchmarks/work/xstnet/{quick,full} (the corpus and wav2vec 2.0 are kept between runs, every
model is trained afresh; --fresh rebuilds everything).
Usage: benchmarks/xstnet.py [--quick] [--fresh] [--work DIR]
"""
import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes/xstnet/run.sh"
SYSTEMS = ["st_only", "xstnet", "cascade"]
TRAINED = {"st_only": "st_only", "xstnet": "stage2", "asr": "asr", "stage1_mt": "stage1"}
SETTINGS = {  # recipe environment; MAX_UPDATE_ST is the budget of st_only, stage 2 and asr
    "quick": {"MAX_SPEECH": 700, "MAX_EVAL": 100, "W2V_UPDATE": 100, "MAX_UPDATE_MT": 400,
              "MAX_UPDATE_ST": 350},  # 5-7 minutes on 2 cores (the machine is noisy)
    "full": {"MAX_SPEECH": 2000, "MAX_EVAL": 200, "W2V_UPDATE": 200, "MAX_UPDATE_MT": 1500,
             "MAX_UPDATE_ST": 1500},  # about 20-25 minutes
}
COMMON = {"SRC": "en", "TGT": "fr", "ARCH": "xstnet_tiny", "VOCAB_SIZE": 1000,
          "MAX_TOKENS": 400000, "MAX_TOKENS_TEXT": 2000, "EXTERNAL_MT_RATIO": 0.25, "BEAM": 5,
          "LR_MT": "1e-3", "LR_ST": "1e-3"}
PAPER = {  # MuST-C tst-COMMON, case-sensitive detokenised sacreBLEU (../shared/anchors/speech.md)
    "xstnet_base_bleu": {"en-de": 25.5, "en-fr": 36.0},
    "xstnet_expand_bleu": {"en-de": 27.8, "en-fr": 38.0},
    "fairseq_s2t_transformer_s_bleu": {"en-de": 22.7, "en-fr": 32.9},
    "note": "GPU, wav2vec_small.pt, 6+6 layers d512, 10k spm, beam 10, 10-checkpoint average",
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
    """Sum over the end-of-epoch train lines of a fairseq-train log."""
    audio, wall, updates, epochs = 0.0, 0.0, 0, 0
    for line in log_path.read_text().splitlines():
        if "| train | epoch" not in line:
            continue
        fields = dict(re.findall(r"\| (\w+) ([-\d.e+]+)", line))
        audio += float(fields.get("audio_seconds", 0.0))
        wall += float(fields["train_wall"])
        updates = int(fields["num_updates"])
        epochs += 1
    done = re.findall(r"done training in ([\d.]+) seconds", log_path.read_text())
    return {"audio_seconds_seen": round(audio, 1), "train_wall_s": wall, "updates": updates,
            "epochs": epochs, "done_training_s": float(done[-1]) if done else None,
            "audio_s_per_s": round(audio / wall, 2) if wall else 0.0}


def bleu(path):
    """(case-sensitive detokenised sacreBLEU of the D- lines, number of sentences)."""
    from ptnmt_fairseq.common.scoring import read_generate_output, score

    text = path.read_text(encoding="utf-8")
    return round(score(text, detokenized=True), 2), len(read_generate_output(text, "D")[1])


def wer(path):
    """WER of the D- lines, lower-cased words without punctuation."""
    from ptnmt_fairseq.common.scoring import score

    return round(score(path.read_text(encoding="utf-8"), metric="wer", detokenized=True), 2)


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    colors = ["tab:gray", "tab:blue", "tab:orange"]
    axes[0].bar(SYSTEMS, [result["bleu"][s] for s in SYSTEMS], color=colors)
    axes[0].set_ylabel("sacreBLEU")
    axes[0].set_title(f"ST BLEU, {result['setup']['test_sentences']} test sentences")
    tput = dict(result["throughput"], asr=result["throughput_asr"])
    axes[1].bar(list(tput), list(tput.values()), color=["tab:gray", "tab:blue", "tab:purple"])
    axes[1].set_ylabel("audio seconds / second")
    axes[1].set_title("Training throughput (2 CPU cores)")
    wall = result["train_wall_s"]
    axes[2].bar(list(wall), list(wall.values()), color="tab:green")
    axes[2].set_ylabel("seconds (train_wall)")
    axes[2].set_title(f"Training time ({result['setup']['max_update_st']} ST-side updates)")
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=15)
    setup = result["setup"]
    fig.suptitle(f"XSTNet vs ST-only vs cascade, espeak-ng en->fr, {setup['train_triples']} triples, "
                 f"{setup['arch']} ({setup['mode']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under 10 minutes on 2 cores")
    parser.add_argument("--fresh", action="store_true", help="also rebuild the corpus and wav2vec 2.0")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    env = dict(COMMON, **SETTINGS[mode])
    work = (args.work or REPO / "benchmarks/work/xstnet" / mode).resolve()
    if args.fresh and work.exists():
        shutil.rmtree(work)
    for d in ("stage1", "stage2", "st_only", "asr", "cascade"):  # every model trains afresh
        shutil.rmtree(work / d, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    step_wall, logs = {}, {}
    for step in ("prepare", "w2v", "stage1", "stage2", "evaluate", "st_only", "cascade"):
        logs[step], step_wall[step] = run_step(work, env, step)
        print(f"{step}: {step_wall[step]:.0f} s", file=sys.stderr)

    stats = {name: train_stats(work / d / "train.log") for name, d in TRAINED.items()}
    bleu_st = {"st_only": bleu(work / "st_only/test.st.gen"),
               "xstnet": bleu(work / "stage2/test.st.gen"),
               "cascade": bleu(work / "cascade/test.st.gen")}
    n_test = {n for _, n in bleu_st.values()}
    assert len(n_test) == 1, f"systems decoded different test sets: {bleu_st}"
    bleu_scores = {s: b for s, (b, _) in bleu_st.items()}
    data = work / "data"
    count = lambda name: sum(1 for _ in open(data / name, encoding="utf-8")) - 1  # noqa: E731
    import torch

    result = {
        "setup": {
            "corpus": "gettext en->fr, English speech by espeak-ng (16 kHz)", "mode": mode,
            "arch": env["ARCH"], "w2v": f"pretrain_wav2vec2.sh, EMBED_DIM 64, {env['W2V_UPDATE']} updates",
            "train_triples": count("train.tsv"), "external_mt_pairs": count("train_mt.tsv"),
            "test_sentences": n_test.pop(), "max_update_mt": env["MAX_UPDATE_MT"],
            "max_update_st": env["MAX_UPDATE_ST"], "max_tokens_samples": env["MAX_TOKENS"],
            "max_tokens_text": env["MAX_TOKENS_TEXT"], "external_mt_ratio": env["EXTERNAL_MT_RATIO"],
            "lr": {"mt": env["LR_MT"], "st": env["LR_ST"]}, "beam": env["BEAM"], "seed": 1,
            "checkpoint": "checkpoint_best.pt (lowest valid loss; validation once per epoch)",
            "budget": "st_only, asr and xstnet stage 2: MAX_UPDATE_ST updates each (xstnet's "
                      "include external-MT batches); xstnet and cascade share the stage-1 MT model",
            "bleu": "sacrebleu.corpus_bleu, detokenised, case-sensitive, on D-/T- lines",
            "device": f"CPU, {os.cpu_count()} cores ({platform.machine()}), torch "
                      f"{torch.__version__}, {torch.get_num_threads()} threads",
        },
        "ratios": {
            "xstnet_minus_st_only_bleu": round(bleu_scores["xstnet"] - bleu_scores["st_only"], 2),
            "xstnet_minus_cascade_bleu": round(bleu_scores["xstnet"] - bleu_scores["cascade"], 2),
        },
        "bleu": bleu_scores,
        "throughput": {"st_only": stats["st_only"]["audio_s_per_s"],
                       "xstnet": stats["xstnet"]["audio_s_per_s"]},
        "throughput_asr": stats["asr"]["audio_s_per_s"],  # the cascade's ASR model
        "throughput_note": "audio seconds of the epoch train lines / their train_wall; xstnet's "
                           "train_wall includes its text-only external-MT updates and three "
                           "decoder passes (st, asr, mt) per speech batch",
        "wer": {"xstnet_asr": wer(work / "stage2/test.asr.gen"),
                "cascade_asr": wer(work / "asr/test.asr.gen")},
        "mt_bleu": {"xstnet": bleu(work / "stage2/test.mt.gen")[0],
                    "stage1": bleu(work / "stage1/test.mt.gen")[0]},
        "train_wall_s": {name: s["train_wall_s"] for name, s in stats.items()},
        "training": stats,
        "step_wall_s": {k: round(v, 1) for k, v in step_wall.items()},
        "paper": PAPER,
        "wall_seconds": round(time.time() - t0),
    }
    out_dir = REPO / "benchmarks/results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "xstnet.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out_dir / "xstnet.png")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
