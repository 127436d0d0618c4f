#!/usr/bin/env python3
"""AB-Net benchmark on the gettext de-en corpus with the packaged MiniLM BERT (CPU).

In one run, with the same data and the same wall-clock training budget per system:
1. per-sentence decoding latency at batch size 1: AB-Net Mask-Predict (T=10, B=4), an
   autoregressive Transformer (beam 5) and fairseq's cmlm_transformer (T=10, B=4);
2. sacrebleu BLEU (tokenised, lowercased WordPiece-joined) of each system on the test split;
3. training step time and peak memory of AB-Net frozen vs AB-Net FB (BERTs fine-tuned).

Writes benchmarks/results/abnet.json and benchmarks/results/abnet.png.
Usage: benchmarks/abnet.py [--quick] [--work DIR]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from ptnmt_fairseq.common.scoring import score  # noqa: E402

BIN = Path(sys.executable).parent
PLUGIN = str(REPO / "ptnmt_fairseq")
SYSTEMS = ["abnet", "transformer", "cmlm"]
DECODE = {  # as in recipes/abnet/run.sh: T=10 passes (fairseq counts from 0), B=4 lengths
    "abnet": ["--task", "translation_abnet", "--iter-decode-max-iter", "9",
              "--iter-decode-with-beam", "4"],
    "cmlm": ["--task", "translation_lev", "--iter-decode-max-iter", "9",
             "--iter-decode-with-beam", "4"],
    "transformer": ["--task", "translation", "--beam", "5"],
}
PAPER = {  # Guo et al. 2020, Table 1 (WMT14 En-De, newstest2014, GPU) and Sec. 4.4
    "latency_ms": {"transformer": 778, "cmlm": 161, "abnet": 327},
    "ar_over_maskpredict_latency": 778 / 327,
    "ar_over_cmlm_latency": 778 / 161,
    "frozen_memory_saving": 0.29, "frozen_time_saving": 0.26,
}
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore")


def run(cmd, **kwargs):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=ENV, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def data_dir(work, system, subset):
    return work / f"{'fairseq' if system in ('cmlm', 'transformer') else 'bert'}-{subset}"


def train(work, budget_s, max_train):
    """The recipe's data preparation and training, each system for ``budget_s`` seconds."""
    env = {"MAX_TRAIN": str(max_train), "MAX_UPDATE": "1000000", "SKIP_GENERATE": "1",
           "TRAIN_EXTRA": f"--stop-time-hours {budget_s / 3600:.5f}"}
    proc = subprocess.run(["bash", REPO / "recipes/abnet/run.sh", work, *SYSTEMS],
                          capture_output=True, text=True, env=dict(ENV, **env))
    if proc.returncode != 0:
        raise RuntimeError(f"recipe failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    import torch

    import ptnmt_fairseq  # noqa: F401  (allow-lists fairseq checkpoint globals)

    return {s: torch.load(work / s / "checkpoint_last.pt", map_location="cpu")
            ["optimizer_history"][-1]["num_updates"] for s in SYSTEMS}


def make_test_subset(work, name, lines):
    """The first ``lines`` test sentences, binarised for both kinds of dictionary."""
    src, tgt = "de", "en"
    tok = work / "bert-bin" / "tok"
    small = work / f"tok-{name}"
    small.mkdir(exist_ok=True)
    for lang in (src, tgt):
        text = (tok / f"test.{lang}").read_text().splitlines()[:lines]
        (small / f"test.{lang}").write_text("\n".join(text) + "\n")
    for kind, task in (("bert", "translation_abnet"), ("fairseq", "translation")):
        dicts = work / f"{kind}-bin"
        run([BIN / "fairseq-preprocess", "--user-dir", PLUGIN, "--task", task, "-s", src, "-t", tgt,
             "--testpref", small / "test", "--srcdict", dicts / f"dict.{src}.txt",
             "--tgtdict", dicts / f"dict.{tgt}.txt", "--destdir", work / f"{kind}-{name}",
             "--workers", "1"])


def generate(work, system, subset, batch_size):
    out = run([BIN / "fairseq-generate", data_dir(work, system, subset), "--user-dir", PLUGIN,
               "--cpu", "--path", work / system / "checkpoint_last.pt", "--gen-subset", "test",
               "--batch-size", batch_size, *DECODE[system]])
    m = re.search(r"Translated ([\d,]+) sentences .* in ([\d.]+)s", out.stderr + out.stdout)
    return out.stdout, int(m.group(1).replace(",", "")), float(m.group(2))


def latency_ms(work, system, repeats):
    """Per-sentence decoding time at batch size 1 (model loading excluded), median of runs."""
    times = []
    for _ in range(repeats):
        _, n, seconds = generate(work, system, "latency", 1)
        times.append(1000 * seconds / n)
    return statistics.median(times), n


def step_time_and_memory(work, finetune, updates):
    save = work / ("fb-probe" if finetune else "frozen-probe")
    cmd = ["/usr/bin/time", "-f", "MAXRSS_KB %M", BIN / "fairseq-train", work / "bert-bin",
           "--user-dir", PLUGIN, "--cpu", "--task", "translation_abnet", "--arch", "abnet_tiny",
           "--source-bert", "all-MiniLM-L6-v2", "--target-bert", "all-MiniLM-L6-v2",
           "--criterion", "nat_loss", "--label-smoothing", "0.1", "--optimizer", "adam",
           "--lr", "5e-4", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100",
           "--max-tokens", "2048", "--max-update", str(updates), "--log-interval", "1",
           "--no-progress-bar", "--disable-validation", "--no-save", "--seed", "1",
           "--num-workers", "0", "--save-dir", save]
    if finetune:
        cmd.append("--finetune-bert")
    out = run(cmd)
    log = out.stdout + out.stderr
    ups = [float(x) for x in re.findall(r"train_inner .*?ups=([\d.]+)", log)][2:]  # skip warm-up
    rss_kb = int(re.search(r"MAXRSS_KB (\d+)", log).group(1))
    return statistics.median(1.0 / u for u in ups if u > 0), rss_kb / 1024


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    systems = list(result["latency_ms"])
    axes[0].bar(systems, [result["latency_ms"][s] for s in systems], color="tab:blue",
                label="measured (CPU)")
    axes[0].set_ylabel("ms / sentence (batch 1)")
    axes[0].set_title("Decoding latency")
    axes[1].bar(systems, [result["bleu"][s] for s in systems], color="tab:green")
    axes[1].set_title("BLEU, test (same training time)")
    probe = result["frozen_vs_fb"]
    names = ["step time", "peak memory"]
    ratios = [result["ratios"]["fb_over_frozen_step_time"],
              result["ratios"]["fb_over_frozen_peak_memory"]]
    paper = [1 / (1 - PAPER["frozen_time_saving"]), 1 / (1 - PAPER["frozen_memory_saving"])]
    x = range(2)
    axes[2].bar([i - 0.2 for i in x], ratios, width=0.4, label="measured (CPU)")
    axes[2].bar([i + 0.2 for i in x], paper, width=0.4, label="paper (GPU)")
    axes[2].set_xticks(list(x), names)
    axes[2].axhline(1.0, color="gray", lw=0.8)
    axes[2].set_title("FB / frozen")
    axes[2].legend()
    fig.suptitle(f"AB-Net on gettext de-en, MiniLM, 2 CPU cores ({probe['updates']} probe updates)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 10 minutes on 2 cores")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks/work/abnet")
    args = parser.parse_args()
    # quick: 60 s of training per system, BLEU on the first 60 test sentences, latency on 10
    budget_s, max_train, bleu_lines, latency_lines, repeats, probe_updates = (
        (60, 6000, 60, 10, 1, 8) if args.quick else (900, 0, 591, 50, 3, 40))
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    updates = train(args.work, budget_s, max_train or 10 ** 9)
    make_test_subset(args.work, "eval", bleu_lines)
    make_test_subset(args.work, "latency", latency_lines)
    bleu, latency, sentences = {}, {}, {}
    for system in SYSTEMS:
        text, _, _ = generate(args.work, system, "eval", 16)
        bleu[system] = round(score(text, "wordpiece"), 2)
        latency[system], sentences[system] = latency_ms(args.work, system, repeats)
    frozen_step, frozen_mb = step_time_and_memory(args.work, False, probe_updates)
    fb_step, fb_mb = step_time_and_memory(args.work, True, probe_updates)
    result = {
        "setup": {"corpus": "gettext de->en", "bert": "all-MiniLM-L6-v2 (both sides)",
                  "arch": "abnet_tiny", "device": "CPU, 2 cores",
                  "train_budget_seconds_per_system": budget_s,
                  "max_train_pairs": max_train or "all", "updates_in_budget": updates,
                  "bleu_test_sentences": bleu_lines, "latency_sentences": sentences,
                  "latency_repeats": repeats, "mode": "quick" if args.quick else "full"},
        "ratios": {
            "ar_over_maskpredict_latency": round(latency["transformer"] / latency["abnet"], 3),
            "ar_over_cmlm_latency": round(latency["transformer"] / latency["cmlm"], 3),
            "fb_over_frozen_step_time": round(fb_step / frozen_step, 3),
            "fb_over_frozen_peak_memory": round(fb_mb / frozen_mb, 3),
        },
        "bleu": bleu,
        "latency_ms": {k: round(v, 1) for k, v in latency.items()},
        "frozen_vs_fb": {"updates": probe_updates,
                         "median_step_s": {"frozen": round(frozen_step, 3), "fb": round(fb_step, 3)},
                         "peak_rss_mb": {"frozen": round(frozen_mb), "fb": round(fb_mb)}},
        "paper": PAPER,
        "wall_seconds": round(time.time() - t0),
    }
    out_dir = REPO / "benchmarks/results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "abnet.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out_dir / "abnet.png")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
