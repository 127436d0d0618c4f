#!/usr/bin/env python3
"""Speech front-ends on synthesised English speech (espeak-ng over gettext, CPU): filterbanks
against a wav2vec 2.0 pre-trained here for a fixed wall-clock time, under the same ASR model.

In one run of recipes/xstnet/run.sh (its ``asr`` step: an ASR-only XSTNet model,
``--train-tasks asr``), on the same speech, vocabulary, model, budget and seed:

* ``fbank``: 80-dim log-mel filterbanks with utterance CMVN into fairseq's convolutional
  subsampler (``--speech-frontend fbank``, ptnmt_fairseq/common/speech/fbank.py), from scratch;
* ``wav2vec2``: a small wav2vec 2.0 (examples/data/pretrain_wav2vec2.sh, EMBED_DIM 64),
  self-supervised on the training audio for ``W2V_MINUTES`` minutes (``--stop-time-hours``; the
  updates reached are reported), then fine-tuned inside the ASR model (the paper's default).

Both ASR models get the same ``MINUTES_ST`` of training. Measured: WER (lower-cased words
without punctuation, against the raw transcripts, src_text of the test manifest, D- lines),
each model's valid-loss curve (one point per epoch), and the wav2vec 2.0 pre-training's
updates and valid-loss curve. The question (issue 18, item 3): does this much wav2vec 2.0
pre-training beat the filterbank front-end at equal ASR budget?

Writes benchmarks/results/speech_frontends.json and .png; works in
benchmarks/work/speech_frontends/{quick,standard} (the speech corpus is kept between runs; the
wav2vec 2.0 and both ASR models are trained afresh; --fresh rebuilds everything).
Usage: benchmarks/speech_frontends.py [--quick] [--fresh] [--work DIR]
"""
import os
import time

import harness
from harness import REPO
from xstnet import COMMON, STANDARD_MODEL, test_score, train_stats

RECIPE = REPO / "recipes/xstnet/run.sh"
FRONTENDS = ["fbank", "wav2vec2"]
SETTINGS = {
    "quick": {"MAX_SPEECH": 700, "MAX_EVAL": 100, "W2V_MINUTES": 1, "W2V_WARMUP": 50,
              "MINUTES_ST": 1, "MAX_UPDATE_ST": 100000, "WARMUP_ST": 50, "VOCAB_SIZE": 1000},
    # The XSTNet standard run's speech, model and learning rate (its fbank ASR model had 7
    # minutes and ended at WER 101.8); 30 minutes of wav2vec 2.0 pre-training, as the issue
    # bounds it, and 5 minutes per ASR model, so that the run fits in 45 minutes.
    "standard": {"MAX_SPEECH": 4000, "MAX_EVAL": 300, "W2V_MINUTES": 30, "W2V_WARMUP": 500,
                 "MINUTES_ST": 5, "MAX_UPDATE_ST": 100000, "WARMUP_ST": 300, "VOCAB_SIZE": 1000,
                 "LR_ST": "2e-3", "TRAIN_EXTRA": f"--bf16 {STANDARD_MODEL}"},
}


def w2v_stats(log_path):
    """Updates and the valid-loss curve ((updates, loss) per validation) of the wav2vec 2.0
    pre-training log."""
    text = log_path.read_text()
    curve = [[int(v["num_updates"]), v["loss"]] for v in harness.epoch_lines(text, "valid")]
    return {"updates": curve[-1][0] if curve else 0, "valid_loss_curve": curve,
            "done_training_s": harness.done_training_seconds(text)}


def share_corpus(source, target):
    """The recipe's corpus and speech of workdir ``source`` (raw/, data/) in workdir ``target``,
    so that both front-ends read the same files."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("raw", "data"):
        link = target / name
        if not link.exists():
            link.symlink_to(source / name)


def main():
    args = harness.parse_args(__doc__, "speech_frontends", "also rebuild the speech corpus")
    env = dict(COMMON, **SETTINGS[args.mode])
    work = args.work
    dirs = {"wav2vec2": work / "wav2vec2", "fbank": work / "fbank"}
    harness.prepare_work(work, args.fresh, ["wav2vec2/w2v", "wav2vec2/asr", "fbank/asr"])
    start = time.monotonic()
    steps = {"prepare": harness.run_recipe(RECIPE, dirs["wav2vec2"], ["prepare"], env)["prepare"]}
    share_corpus(dirs["wav2vec2"], dirs["fbank"])
    steps["asr_fbank"] = harness.run_recipe(RECIPE, dirs["fbank"], ["asr"],
                                            dict(env, SPEECH_FRONTEND="fbank"))["asr"]
    w2v = harness.run_recipe(RECIPE, dirs["wav2vec2"], ["w2v", "asr"], env)
    steps["w2v_pretraining"], steps["asr_wav2vec2"] = w2v["w2v"], w2v["asr"]

    stats = {f: train_stats(dirs[f] / "asr/train.log") for f in FRONTENDS}
    wer = {f: test_score(dirs[f], "asr/test.asr.gen", "wer") for f in FRONTENDS}
    pretraining = w2v_stats(dirs["wav2vec2"] / "w2v/train.log")
    data = dirs["wav2vec2"] / "data"
    result = {
        "setup": {
            "corpus": "gettext English, speech by espeak-ng (16 kHz)", "mode": args.mode,
            "task": "ASR (--train-tasks asr), XSTNet's model", "arch": env["ARCH"],
            "model_overrides": env.get("TRAIN_EXTRA", ""), "vocab": env["VOCAB_SIZE"],
            "train_utterances": harness.count_lines(data / "train.tsv") - 1,
            "test_utterances": wer["fbank"].sentences,
            "asr_budget": f"{env['MINUTES_ST']} minutes each (--stop-time-hours)",
            "lr": env.get("LR_ST", COMMON["LR_ST"]), "warmup": env["WARMUP_ST"],
            "w2v": f"pretrain_wav2vec2.sh, EMBED_DIM 64, 1 layer, {env['W2V_MINUTES']} minutes "
                   f"(--stop-time-hours), warm-up {env['W2V_WARMUP']}, then constant lr 2e-3 "
                   "(polynomial decay over MAX_UPDATE, not reached); fine-tuned in the ASR model",
            "checkpoint": "checkpoint_best.pt (lowest valid loss; validation once per epoch)",
            "wer": harness.scoring_description(
                "wer", references_name="the raw transcripts (test.tsv src_text)"),
            "beam": env["BEAM"], "seed": 1, "device": harness.device_description(),
        },
        "wer": {f: wer[f].value for f in FRONTENDS},
        "ratios": {"wav2vec2_minus_fbank_wer": round(wer["wav2vec2"].value - wer["fbank"].value, 2)},
        "wav2vec2_beats_fbank": wer["wav2vec2"].value < wer["fbank"].value,
        "updates": {f: stats[f]["updates"] for f in FRONTENDS},
        "asr_training": stats,
        "w2v_pretraining": pretraining,
        "step_wall_s": harness.wall_seconds(steps),
    }
    harness.write_results("speech_frontends", args.mode, result, {}, start)
    plot(result)


def plot(result):
    setup = result["setup"]
    title = (f"ASR front-ends, espeak-ng English, {setup['train_utterances']} utterances, "
             f"{setup['asr_budget'].split(' (')[0]} of ASR training ({setup['mode']}, "
             f"{os.cpu_count()} CPU cores)")
    with harness.figure("speech_frontends", 3, title, size=(14, 4)) as axes:
        harness.bars(axes[0], result["wer"], f"WER, {setup['test_utterances']} test utterances",
                     ylabel="WER (%)", color=["tab:gray", "tab:blue"])
        for frontend, stats in result["asr_training"].items():
            curve = stats["valid_loss_curve"]
            axes[1].plot([u for u, _ in curve], [v for _, v in curve], marker="o", label=frontend)
        axes[1].set_title("ASR valid loss")
        axes[1].set_xlabel("updates")
        axes[1].legend()
        curve = result["w2v_pretraining"]["valid_loss_curve"]
        axes[2].plot([u for u, _ in curve], [v for _, v in curve], marker="o", color="tab:blue")
        axes[2].set_title(f"wav2vec 2.0 pre-training ({setup['w2v'].split(',')[2].strip()})")
        axes[2].set_xlabel("updates")
        axes[2].set_ylabel("valid loss")


if __name__ == "__main__":
    main()
