#!/usr/bin/env python3
"""XSTNet benchmark on synthesised En->Fr speech (espeak-ng over gettext) with a tiny wav2vec 2.0 (CPU).

In one run of recipes/xstnet/run.sh on the same data, the same wav2vec 2.0 and the same seed:
1. ST BLEU (case-sensitive sacreBLEU 13a of the detokenised D- lines of fairseq-generate, beam
   5, against the raw translations, tgt_text of the test manifest) on the test split for three
   systems:
   - ``st_only``: ST alone (``--train-tasks st``), from wav2vec 2.0;
   - ``xstnet``: stage 1 MT pre-training (triples' text + external MT), then stage 2
     ``--train-tasks st,asr,mt`` with external MT;
   - ``cascade``: an ASR-only model (``--train-tasks asr``), its transcripts translated by the
     stage-1 MT model (the same model XSTNet starts from, trained once).
   Budget: the ST-only model, the ASR model and XSTNet's stage 2 get the same budget (quick:
   ``MAX_UPDATE_ST`` updates; standard: ``MINUTES_ST`` minutes of training, ``--stop-time-hours``,
   with the updates reached reported), the same batch sizes and learning-rate schedule; XSTNet
   and the cascade both add the one stage-1 MT model. XSTNet's stage-2 updates include its
   external-MT batches, so it sees less audio than ST-only in the same budget
   (``audio_seconds_seen``). The standard mode uses the filterbank front-end
   (``--speech-frontend fbank``); the quick mode a wav2vec 2.0 pre-trained for 100 updates.
   ``significance``: sacreBLEU's paired bootstrap of XSTNet's ST BLEU against each other system.
2. Training throughput in audio seconds per second: the ``audio_seconds`` and ``train_wall`` of
   the end-of-epoch ``train | epoch`` lines of each training log, summed over epochs.
3. ASR WER (lowercased, punctuation removed, against the raw transcripts, src_text) of XSTNet and
   of the cascade's ASR model, MT BLEU of XSTNet and of the stage-1 model, and the wall time of
   each recipe step. No score uses fairseq's T- lines (rebuilt from dictionary ids).

Writes benchmarks/results/xstnet.json and benchmarks/results/xstnet.png; works in
benchmarks/work/xstnet/{quick,standard} (the corpus and wav2vec 2.0 are kept between runs, every
model is trained afresh; --fresh rebuilds everything).
Usage: benchmarks/xstnet.py [--quick] [--fresh] [--work DIR]
"""
import os
import time

import harness
from harness import REPO

RECIPE = REPO / "recipes/xstnet/run.sh"
STEPS = ["prepare", "w2v", "stage1", "stage2", "evaluate", "st_only", "cascade"]
SYSTEMS = ["st_only", "xstnet", "cascade"]
MODEL_DIRS = ["stage1", "stage2", "st_only", "asr", "cascade"]
TRAINED = {"st_only": "st_only", "xstnet": "stage2", "asr": "asr", "stage1_mt": "stage1"}
STANDARD_MODEL = ("--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 "
                  "--decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 "
                  "--encoder-attention-heads 4 --decoder-attention-heads 4 --conv-channels 512")
SETTINGS = {  # recipe environment; MAX_UPDATE_ST (quick) or MINUTES_ST (standard) is the budget
              # of st_only, stage 2 and asr
    "quick": {"MAX_SPEECH": 700, "MAX_EVAL": 100, "W2V_UPDATE": 100, "MAX_UPDATE_MT": 400,
              "MAX_UPDATE_ST": 350, "VOCAB_SIZE": 1000},
    # The filterbank front-end (a few-minute wav2vec 2.0 learns nothing: README), a 3+3-layer
    # d256 model in bfloat16, the same minutes for each speech system.
    "standard": {"MAX_SPEECH": 4000, "MAX_EVAL": 300, "SPEECH_FRONTEND": "fbank",
                 "MINUTES_MT": 8, "MINUTES_ST": 7, "MAX_UPDATE_MT": 100000,
                 "MAX_UPDATE_ST": 100000, "WARMUP_MT": 300, "WARMUP_ST": 300, "VOCAB_SIZE": 1000,
                 "MAX_TOKENS_TEXT": 2048, "LR_MT": "2e-3", "LR_ST": "2e-3",
                 "TRAIN_EXTRA": f"--bf16 {STANDARD_MODEL}"},
}
COMMON = {"SRC": "en", "TGT": "fr", "ARCH": "xstnet_tiny",
          "MAX_TOKENS": 400000, "MAX_TOKENS_TEXT": 2000, "EXTERNAL_MT_RATIO": 0.25, "BEAM": 5,
          "LR_MT": "1e-3", "LR_ST": "1e-3"}
# MuST-C tst-COMMON, case-sensitive detokenised sacreBLEU: XSTNet from the results table of the
# authors' README (ReneeYe/XSTNet); s2t_transformer_s from fairseq's
# examples/speech_to_text/docs/mustc_example.md.
PAPER = {
    "xstnet_base_bleu": {"en-de": 25.5, "en-fr": 36.0},
    "xstnet_expand_bleu": {"en-de": 27.8, "en-fr": 38.0},
    "fairseq_s2t_transformer_s_bleu": {"en-de": 22.7, "en-fr": 32.9},
    "note": "GPU, wav2vec_small.pt, 6+6 layers d512, 10k spm, beam 10, 10-checkpoint average",
}


def train_stats(log_path):
    """Audio seconds (0 for text-only training), train_wall seconds and updates, summed over
    the end-of-epoch train lines of a fairseq-train log."""
    text = log_path.read_text()
    epochs = harness.epoch_lines(text)
    audio = sum(e.get("audio_seconds", 0.0) for e in epochs)
    wall = sum(e["train_wall"] for e in epochs)
    # The learning curve: (updates, valid loss) at the end of each epoch.
    curve = [[int(v["num_updates"]), v["loss"]] for v in harness.epoch_lines(text, "valid")]
    return {"valid_loss_curve": curve, "audio_seconds_seen": round(audio, 1), "train_wall_s": wall,
            "updates": int(epochs[-1]["num_updates"]) if epochs else 0, "epochs": len(epochs),
            "done_training_s": harness.done_training_seconds(text),
            "audio_s_per_s": round(audio / wall, 2) if wall else 0.0}


def test_score(work, gen, metric="bleu"):
    """A decoded test split against the raw references of data/test.tsv: tgt_text (BLEU: ST,
    MT, the cascade) or src_text (WER: ASR)."""
    column = "src_text" if metric == "wer" else "tgt_text"
    return harness.score_file(work / gen, work / "data/test.tsv", metric, column)


def significance(work):
    """sacreBLEU paired bootstrap of XSTNet's ST against ST-only's and the cascade's (the
    paper's comparisons), on the test split's raw translations."""
    refs = harness.references(work / "data/test.tsv", "tgt_text")
    hyps = {system: harness.detokenized_hypotheses(work / gen, refs) for system, gen in
            (("st_only", "st_only/test.st.gen"), ("xstnet", "stage2/test.st.gen"),
             ("cascade", "cascade/test.st.gen"))}
    return {f"xstnet_vs_{base}/st": harness.paired_significance(hyps[base], hyps["xstnet"], refs)
            for base in ("st_only", "cascade")}


def st_bleu(work):
    """{system: ST BLEU} on the test split; all systems must have decoded the same sentences."""
    scores = {"st_only": test_score(work, "st_only/test.st.gen"),
              "xstnet": test_score(work, "stage2/test.st.gen"),
              "cascade": test_score(work, "cascade/test.st.gen")}
    sizes = {s.sentences for s in scores.values()}
    assert len(sizes) == 1, f"systems decoded different test sets: {scores}"
    return {system: s.value for system, s in scores.items()}, sizes.pop()


def plot(result):
    setup = result["setup"]
    title = (f"XSTNet vs ST-only vs cascade, espeak-ng en->fr, {setup['train_triples']} triples, "
             f"{setup['arch']} ({setup['mode']})")
    with harness.figure("xstnet", 3, title, size=(13, 4)) as axes:
        harness.bars(axes[0], result["bleu"], f"ST BLEU, {setup['test_sentences']} test sentences",
                     ylabel="sacreBLEU", color=["tab:gray", "tab:blue", "tab:orange"])
        harness.bars(axes[1], dict(result["throughput"], asr=result["throughput_asr"]),
                     f"Training throughput ({os.cpu_count()} CPU cores)",
                     ylabel="audio seconds / second", color=["tab:gray", "tab:blue", "tab:purple"])
        harness.bars(axes[2], result["train_wall_s"],
                     f"Training time ({setup['budget'].split(' (')[0]})",
                     ylabel="seconds (train_wall)", color="tab:green")
        for ax in axes:
            ax.tick_params(axis="x", labelrotation=15)


def main():
    args = harness.parse_args(__doc__, "xstnet", "also rebuild the corpus and wav2vec 2.0")
    env = dict(COMMON, **SETTINGS[args.mode])
    work = args.work
    harness.prepare_work(work, args.fresh, MODEL_DIRS)
    start = time.monotonic()
    steps = harness.run_recipe(RECIPE, work, STEPS, env)

    stats = {name: train_stats(work / d / "train.log") for name, d in TRAINED.items()}
    bleu, test_sentences = st_bleu(work)
    data = work / "data"
    result = {
        "setup": {
            "corpus": "gettext en->fr, English speech by espeak-ng (16 kHz)", "mode": args.mode,
            "arch": env["ARCH"],
            "speech_frontend": env.get("SPEECH_FRONTEND", "wav2vec2"),
            "w2v": (f"pretrain_wav2vec2.sh, EMBED_DIM 64, {env['W2V_UPDATE']} updates"
                    if env.get("SPEECH_FRONTEND") != "fbank" else None),
            "model_overrides": env.get("TRAIN_EXTRA", ""), "vocab": env["VOCAB_SIZE"],
            "train_triples": harness.count_lines(data / "train.tsv") - 1,  # less the header
            "external_mt_pairs": harness.count_lines(data / "train_mt.tsv") - 1,
            "test_sentences": test_sentences, "max_update_mt": env["MAX_UPDATE_MT"],
            "max_update_st": env["MAX_UPDATE_ST"], "max_tokens_samples": env["MAX_TOKENS"],
            "max_tokens_text": env["MAX_TOKENS_TEXT"],
            "external_mt_ratio": env["EXTERNAL_MT_RATIO"],
            "lr": {"mt": env["LR_MT"], "st": env["LR_ST"]}, "beam": env["BEAM"], "seed": 1,
            "checkpoint": "checkpoint_best.pt (lowest valid loss; validation once per epoch)",
            "budget": (f"st_only, asr and xstnet stage 2: {env['MINUTES_ST']} minutes each "
                       f"(--stop-time-hours), stage 1 MT {env['MINUTES_MT']} minutes"
                       if "MINUTES_ST" in env else
                       "st_only, asr and xstnet stage 2: MAX_UPDATE_ST updates each") +
                      " (xstnet's include external-MT batches); xstnet and cascade share the "
                      "stage-1 MT model",
            "significance": harness.SIGNIFICANCE,
            "bleu": harness.scoring_description(
                references_name="the raw references (test.tsv tgt_text)"),
            "wer": harness.scoring_description(
                "wer", references_name="the raw transcripts (test.tsv src_text)"),
            "device": harness.device_description(),
        },
        "ratios": {
            "xstnet_minus_st_only_bleu": round(bleu["xstnet"] - bleu["st_only"], 2),
            "xstnet_minus_cascade_bleu": round(bleu["xstnet"] - bleu["cascade"], 2),
        },
        "significance": significance(work),
        "bleu": bleu,
        "updates": {name: s["updates"] for name, s in stats.items()},
        "throughput": {"st_only": stats["st_only"]["audio_s_per_s"],
                       "xstnet": stats["xstnet"]["audio_s_per_s"]},
        "throughput_asr": stats["asr"]["audio_s_per_s"],  # the cascade's ASR model
        "throughput_note": "audio seconds of the epoch train lines / their train_wall; xstnet's "
                           "train_wall includes its text-only external-MT updates and three "
                           "decoder passes (st, asr, mt) per speech batch",
        "wer": {"xstnet_asr": test_score(work, "stage2/test.asr.gen", "wer").value,
                "cascade_asr": test_score(work, "asr/test.asr.gen", "wer").value},
        "mt_bleu": {"xstnet": test_score(work, "stage2/test.mt.gen").value,
                    "stage1": test_score(work, "stage1/test.mt.gen").value},
        "train_wall_s": {name: s["train_wall_s"] for name, s in stats.items()},
        "training": stats,
        "step_wall_s": harness.wall_seconds(steps),
    }
    harness.write_results("xstnet", args.mode, result, PAPER, start)
    plot(result)


if __name__ == "__main__":
    main()
