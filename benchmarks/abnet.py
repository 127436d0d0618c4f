#!/usr/bin/env python3
"""AB-Net benchmark on the gettext de-en corpus with the packaged MiniLM BERT (CPU).

In one run, with the same data and the same wall-clock training budget per system:
1. per-sentence decoding latency at batch size 1: AB-Net Mask-Predict (T=10, B=4), an
   autoregressive Transformer (beam 5) and fairseq's cmlm_transformer (T=10, B=4);
2. BLEU of each system on the first test sentences: tokenised sacreBLEU of the WordPiece-joined
   H- lines against the raw English test text (the recipe's pair/test.de-en.en, never fairseq's
   T- lines) in the target BERT's basic tokenisation (MiniLM: uncased, accents stripped);
3. training step time and peak memory of AB-Net frozen vs AB-Net FB (BERTs fine-tuned).

Writes benchmarks/results/abnet.json and benchmarks/results/abnet.png; works in
benchmarks/work/abnet/{quick,standard} (the corpus and binarised data are kept between runs,
every model is trained afresh; --fresh rebuilds everything).
Usage: benchmarks/abnet.py [--quick] [--fresh] [--work DIR]
"""
import os
import re
import time

import harness
from harness import BIN, PLUGIN, REPO

SYSTEMS = ["abnet", "transformer", "cmlm"]
SRC, TGT = "de", "en"  # the recipe's default direction
DECODE = {  # as in recipes/abnet/run.sh: T=10 passes (fairseq counts from 0), B=4 lengths
    "abnet": ["--task", "translation_abnet", "--iter-decode-max-iter", "9",
              "--iter-decode-with-beam", "4"],
    "cmlm": ["--task", "translation_lev", "--iter-decode-max-iter", "9",
             "--iter-decode-with-beam", "4"],
    "transformer": ["--task", "translation", "--beam", "5"],
}
SETTINGS = {  # training budget per system in seconds; max_train None = all pairs
    "quick": {"budget_s": 60, "max_train": 6000, "bleu_lines": 60, "latency_lines": 10,
              "latency_repeats": 1, "probe_updates": 8},
    "standard": {"budget_s": 900, "max_train": None, "bleu_lines": 591, "latency_lines": 50,
                 "latency_repeats": 3, "probe_updates": 40},
}
PAPER = {  # Guo et al. 2020, Table 1 (WMT14 En-De, newstest2014, GPU) and Sec. 4.4
    "latency_ms": {"transformer": 778, "cmlm": 161, "abnet": 327},
    "ar_over_maskpredict_latency": 778 / 327,
    "ar_over_cmlm_latency": 778 / 161,
    "frozen_memory_saving": 0.29, "frozen_time_saving": 0.26,
}


def data_dir(work, system, subset):
    return work / f"{'fairseq' if system in ('cmlm', 'transformer') else 'bert'}-{subset}"


def train(work, budget_s, max_train):
    """The recipe's data preparation and training, each system for ``budget_s`` seconds;
    returns {system: updates done}."""
    env = {"MAX_TRAIN": max_train or "", "MAX_UPDATE": 1000000, "SKIP_GENERATE": 1,
           "TRAIN_EXTRA": f"--stop-time-hours {budget_s / 3600:.5f}"}
    harness.run(["bash", REPO / "recipes/abnet/run.sh", work, *SYSTEMS], env, name="recipe")
    import torch

    import ptnmt_fairseq  # noqa: F401  (allow-lists fairseq checkpoint globals)

    return {s: torch.load(work / s / "checkpoint_last.pt", map_location="cpu")
            ["optimizer_history"][-1]["num_updates"] for s in SYSTEMS}


def make_test_subset(work, name, lines):
    """The first ``lines`` test sentences, binarised for both kinds of dictionary."""
    src, tgt = SRC, TGT
    tok = work / "bert-bin" / "tok"
    small = work / f"tok-{name}"
    small.mkdir(exist_ok=True)
    for lang in (src, tgt):
        text = (tok / f"test.{lang}").read_text().splitlines()[:lines]
        (small / f"test.{lang}").write_text("\n".join(text) + "\n")
    for kind, task in (("bert", "translation_abnet"), ("fairseq", "translation")):
        dicts = work / f"{kind}-bin"
        harness.run([BIN / "fairseq-preprocess", "--user-dir", PLUGIN, "--task", task,
                     "-s", src, "-t", tgt, "--testpref", small / "test",
                     "--srcdict", dicts / f"dict.{src}.txt", "--tgtdict", dicts / f"dict.{tgt}.txt",
                     "--destdir", work / f"{kind}-{name}", "--workers", "1"])


def generate(work, system, subset, batch_size):
    """(fairseq-generate stdout, sentences, decoding seconds as fairseq reports them)."""
    out = harness.run([BIN / "fairseq-generate", data_dir(work, system, subset), "--user-dir",
                       PLUGIN, "--cpu", "--path", work / system / "checkpoint_last.pt",
                       "--gen-subset", "test", "--batch-size", batch_size, *DECODE[system]])
    m = re.search(r"Translated ([\d,]+) sentences .* in ([\d.]+)s", out.log)
    return out.stdout, int(m.group(1).replace(",", "")), float(m.group(2))


def latency_ms(work, system, repeats):
    """(per-sentence decoding time in ms at batch size 1, model loading excluded, median of
    ``repeats`` runs; sentences)."""
    times = []
    for _ in range(repeats):
        _, n, seconds = generate(work, system, "latency", 1)
        times.append(1000 * seconds / n)
    return harness.median(times), n


def step_time_and_memory(work, finetune, updates):
    """(median seconds per update after two warm-up updates, peak process RSS in MB) of
    ``updates`` AB-Net updates, BERTs frozen or fine-tuned."""
    cmd = ["/usr/bin/time", "-f", "MAXRSS_KB %M", BIN / "fairseq-train", work / "bert-bin",
           "--user-dir", PLUGIN, "--cpu", "--task", "translation_abnet", "--arch", "abnet_tiny",
           "--source-bert", "all-MiniLM-L6-v2", "--target-bert", "all-MiniLM-L6-v2",
           "--criterion", "nat_loss", "--label-smoothing", "0.1", "--optimizer", "adam",
           "--lr", "5e-4", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100",
           "--max-tokens", "2048", "--max-update", str(updates), "--log-interval", "1",
           "--no-progress-bar", "--disable-validation", "--no-save", "--seed", "1",
           "--num-workers", "0", "--save-dir", work / ("fb-probe" if finetune else "frozen-probe")]
    if finetune:
        cmd.append("--finetune-bert")
    log = harness.run(cmd, name="fairseq-train probe").log
    ups = [line["ups"] for line in harness.inner_lines(log)][2:]
    rss_kb = int(re.search(r"MAXRSS_KB (\d+)", log).group(1))
    return harness.median(1.0 / u for u in ups if u > 0), rss_kb / 1024


def plot(result):
    probe = result["frozen_vs_fb"]
    title = (f"AB-Net on gettext de-en, MiniLM, {os.cpu_count()} CPU cores "
             f"({probe['updates']} probe updates)")
    with harness.figure("abnet", 3, title, size=(13, 4)) as axes:
        harness.bars(axes[0], result["latency_ms"], "Decoding latency",
                     ylabel="ms / sentence (batch 1)", color="tab:blue")
        harness.bars(axes[1], result["bleu"], "BLEU, test (same training time)", color="tab:green")
        measured = [result["ratios"]["fb_over_frozen_step_time"],
                    result["ratios"]["fb_over_frozen_peak_memory"]]
        paper = [1 / (1 - PAPER["frozen_time_saving"]), 1 / (1 - PAPER["frozen_memory_saving"])]
        harness.grouped_bars(axes[2], ["step time", "peak memory"],
                             {"measured (CPU)": measured, "paper (GPU)": paper})
        axes[2].axhline(1.0, color="gray", lw=0.8)
        axes[2].set_title("FB / frozen")


def main():
    args = harness.parse_args(__doc__, "abnet", "also rebuild the corpus and binarised data")
    s = SETTINGS[args.mode]
    harness.prepare_work(args.work, args.fresh, SYSTEMS)
    start = time.monotonic()
    updates = train(args.work, s["budget_s"], s["max_train"])
    make_test_subset(args.work, "eval", s["bleu_lines"])
    make_test_subset(args.work, "latency", s["latency_lines"])
    raw = args.work / "pair" / f"test.{SRC}-{TGT}.{TGT}"  # the raw text of the decoded lines
    refs = harness.bert_references(raw, "all-MiniLM-L6-v2", raw.with_suffix(".basic"),
                                   first=s["bleu_lines"])
    bleu, latency, sentences = {}, {}, {}
    for system in SYSTEMS:
        text, _, _ = generate(args.work, system, "eval", 16)
        bleu[system] = harness.score_generate(text, refs, subword="wordpiece",
                                              tokenize="none").value
        latency[system], sentences[system] = latency_ms(args.work, system, s["latency_repeats"])
    frozen_step, frozen_mb = step_time_and_memory(args.work, False, s["probe_updates"])
    fb_step, fb_mb = step_time_and_memory(args.work, True, s["probe_updates"])
    result = {
        "setup": {"corpus": "gettext de->en", "bert": "all-MiniLM-L6-v2 (both sides)",
                  "arch": "abnet_tiny", "device": harness.device_description(),
                  "train_budget_seconds_per_system": s["budget_s"],
                  "max_train_pairs": s["max_train"] or "all", "updates_in_budget": updates,
                  "bleu_test_sentences": s["bleu_lines"],
                  "bleu": harness.scoring_description(
                      hypotheses="WordPiece-joined H- lines", lowercase=True, tokenize="none",
                      references_name=f"the raw references (pair/test.{SRC}-{TGT}.{TGT}, first "
                                      f"{s['bleu_lines']} lines) in MiniLM's basic tokenisation"),
                  "latency_sentences": sentences,
                  "latency_repeats": s["latency_repeats"], "mode": args.mode},
        "ratios": {
            "ar_over_maskpredict_latency": round(latency["transformer"] / latency["abnet"], 3),
            "ar_over_cmlm_latency": round(latency["transformer"] / latency["cmlm"], 3),
            "fb_over_frozen_step_time": round(fb_step / frozen_step, 3),
            "fb_over_frozen_peak_memory": round(fb_mb / frozen_mb, 3),
        },
        "bleu": bleu,
        "latency_ms": {k: round(v, 1) for k, v in latency.items()},
        "frozen_vs_fb": {
            "updates": s["probe_updates"],
            "median_step_s": {"frozen": round(frozen_step, 3), "fb": round(fb_step, 3)},
            "peak_rss_mb": {"frozen": round(frozen_mb), "fb": round(fb_mb)},
        },
    }
    harness.write_results("abnet", args.mode, result, PAPER, start)
    plot(result)


if __name__ == "__main__":
    main()
