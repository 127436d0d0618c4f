#!/usr/bin/env bash
# XSTNet pipeline (Ye et al., Interspeech 2021) on synthesised speech (espeak-ng over gettext):
# prepare -> wav2vec 2.0 -> stage 1 (MT pre-training) -> stage 2 (ST+ASR+MT) -> evaluate.
#
# Usage: recipes/xstnet/run.sh WORKDIR [STEP...]
#   STEP: prepare  gettext SRC-TGT corpus, espeak-ng speech for MAX_SPEECH train / MAX_EVAL
#                  valid and test lines, joint sentencepiece, dict, config.yaml and the external
#                  MT pairs (gettext train pairs whose source is not a speech transcript)
#         w2v      pre-train a small wav2vec 2.0 (pretrain_wav2vec2.sh), unless W2V_PATH is set
#         stage1   MT pre-training on transcript/translation pairs + external MT (--train-tasks mt)
#         stage2   XSTNet multi-task fine-tuning from stage 1 (--train-tasks st,asr,mt + external MT)
#         evaluate XSTNet ST BLEU, ASR WER and MT BLEU on the test split (also stage 1's MT BLEU)
#         st_only  baseline: the same model trained on ST alone from wav2vec 2.0 (no MT data)
#         cascade  baseline: an ASR-only model (--train-tasks asr), its test transcripts
#                  translated by the stage-1 MT model
#         asr      the ASR-only model alone, trained and scored (WER), without the cascade's MT
#         all      every step above
#   default: prepare w2v stage1 stage2 evaluate
# Every system trains in WORKDIR/<system>/ (train.log appended; fairseq-train resumes from
# checkpoint_last.pt, so re-running a step with the same MAX_UPDATE_* only re-validates) and
# decodes checkpoint_best.pt (lowest valid loss; with AVERAGE=N, checkpoint_avg.pt) into WORKDIR/<system>/test.<task>.gen. Scores
# compare the detokenised D- lines with the raw text of the test manifest WORKDIR/data/test.tsv
# (never fairseq's T- lines, rebuilt from ids): BLEU is case-sensitive sacreBLEU (13a) against
# tgt_text (ST, MT, the cascade), the same for all systems; WER is on lower-cased words without
# punctuation against src_text (ASR).
#
# Environment (CPU-sized defaults):
#   SRC=en TGT=fr                 direction; SRC is spoken (the gettext corpus is English-centric)
#   MAX_SPEECH=N  MAX_EVAL=N      speech triples for train / valid and test (default 2000, 200)
#   MAX_TRAIN=N                   cap the gettext training pairs (the external MT; default: all)
#   VOCAB_SIZE=N                  joint sentencepiece size (default 1000)
#   W2V_PATH=CKPT                 a fairseq wav2vec 2.0 checkpoint (e.g. wav2vec_small.pt);
#                                 otherwise W2V_UPDATE (default 200) updates of a small one, or
#                                 W2V_MINUTES of them (wall clock; warm-up W2V_WARMUP, default 500)
#   ARCH=xstnet_tiny|xstnet       model preset (default xstnet_tiny: 2+2 layers, d128)
#   MAX_UPDATE_MT, MAX_UPDATE_ST  updates of stage 1 / of stage 2, ST-only and ASR (default 800,
#                                 800); WARMUP_MT, WARMUP_ST (default a tenth of them)
#   LR_MT, LR_ST                  peak learning rates (default 1e-3, 1e-3)
#   MAX_TOKENS=N                  audio samples per speech batch (default 400000 = 25 s)
#   MAX_TOKENS_TEXT=N             tokens per text-only batch (default 2000)
#   EXTERNAL_MT_RATIO=F           fraction of the external-MT batches used per stage-2 epoch
#                                 (default 0.25, after the paper's text ratio 0.25)
#   FREEZE_W2V=1                  keep wav2vec 2.0 frozen (the paper fine-tunes it)
#   SPEECH_FRONTEND=fbank         80-dim log-mel filterbanks + fairseq's convolutional subsampler
#                                 instead of wav2vec 2.0 (the w2v step is skipped): learns from
#                                 scratch on a CPU budget
#   AVERAGE=N  SAVE_INTERVAL=K    decode the average of the N newest checkpoints, one saved every
#                                 K updates (default 100; the paper averages the last 10)
#   MINUTES_MT, MINUTES_ST        wall-clock budgets (--stop-time-hours) instead of updates
#                                 (whichever of updates and minutes ends first)
#   BEAM=N                        beam size (default 5)
#   TRAIN_EXTRA, GEN_EXTRA        extra fairseq-train / fairseq-generate options (word-split)
#
# Paper settings (Ye et al., Interspeech 2021; ReneeYe/XSTNet: README.md and config/model_config.yml
# for wav2vec 2.0 and the shrinker; the author's fairseq port ReneeYe/ConST: the xstnet_base
# architecture, ConST/scripts/train_en2x.sh for the optimiser and batches, README.md for decoding),
# for GPUs on MuST-C:
#   W2V_PATH=wav2vec_small.pt (self-supervised Base, fine-tuned, raw waveform, no normalisation);
#   ARCH=xstnet: shrinker 2x Conv1d kernel 5 stride 2 -> 512, 6+6 layers, d512, FFN 2048,
#   8 heads, pre-norm, dropout 0.1; joint spm unigram 10k (VOCAB_SIZE=10000) + <lang:xx> tags;
#   loss CE_ST + CE_ASR + CE_MT with label smoothing 0.1; Adam (0.9, 0.98), lr 1e-4 inverse_sqrt
#   warmup 25k (MT pre-training lr 5e-4), clip-norm 10, MAX_TOKENS=1000000 MAX_TOKENS_TEXT=2000,
#   update-freq 2, text ratio 0.25; decode BEAM=10 from the average of the last 10 checkpoints.
#   e.g. W2V_PATH=wav2vec_small.pt ARCH=xstnet VOCAB_SIZE=10000 MAX_TOKENS=1000000 \
#        LR_MT=5e-4 LR_ST=1e-4 WARMUP_MT=4000 WARMUP_ST=25000 BEAM=10 TRAIN_EXTRA="--update-freq 2"
#   Reported MuST-C En-De tst-COMMON BLEU: 25.5 (XSTNet base), 27.8 (expand, + external MT).
# Models this small and this short do not learn speech yet: benchmarks/xstnet.py is the
# controlled comparison; measured runs are in the README and benchmarks/results/xstnet.json.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
set_workdir "$@"; shift
data="$work/data"
src="${SRC:-en}"; tgt="${TGT:-fr}"
max_update_mt="${MAX_UPDATE_MT:-800}"; max_update_st="${MAX_UPDATE_ST:-800}"
warmup_mt="${WARMUP_MT:-$(tenth_of "$max_update_mt")}"
warmup_st="${WARMUP_ST:-$(tenth_of "$max_update_st")}"
w2v="${W2V_PATH:-$work/w2v/checkpoint_best.pt}"
set_speech_frontend "$w2v"
common_train=(--task xstnet --arch "${ARCH:-xstnet_tiny}" "${speech_frontend[@]}"
    --criterion xstnet_multitask --label-smoothing 0.1 --optimizer adam --adam-betas '(0.9,0.98)'
    --lr-scheduler inverse_sqrt --clip-norm 10 --max-tokens "${MAX_TOKENS:-400000}"
    --max-tokens-text "${MAX_TOKENS_TEXT:-2000}" --skip-bad-audio --log-interval 20)
read -r -a averaging <<< "$(average_options)"  # AVERAGE=N: keep N update checkpoints
common_train+=("${averaging[@]}")

train_system() {  # SYSTEM: fairseq-train into $work/SYSTEM
    local system="$1" args
    require_speech_frontend "$w2v"
    case "$system" in
        stage1)  # MT pre-training on the triples' text and the external pairs; no audio is read
            # shellcheck disable=SC2207
            args=(--train-tasks mt --external-mt train_mt.tsv --lr "${LR_MT:-1e-3}"
                  --warmup-updates "$warmup_mt" $(budget_options "$max_update_mt" "${MINUTES_MT:-}")) ;;
        stage2)  # "don't stop training D_MT-ext": external MT stays in the mix
            [ -f "$work/stage1/checkpoint_best.pt" ] || die "run stage1 first"
            args=(--train-tasks st,asr,mt --external-mt train_mt.tsv
                  --external-mt-ratio "${EXTERNAL_MT_RATIO:-0.25}"
                  --finetune-from-model "$work/stage1/checkpoint_best.pt") ;;
        st_only) args=(--train-tasks st) ;;
        asr)     args=(--train-tasks asr) ;;
        *) die "unknown system $system" ;;
    esac
    if [ "$system" != stage1 ]; then
        # shellcheck disable=SC2207
        args+=(--lr "${LR_ST:-1e-3}" --warmup-updates "$warmup_st"
               $(budget_options "$max_update_st" "${MINUTES_ST:-}"))
    fi
    train_logged "$work/$system" "$data" "${common_train[@]}" "${args[@]}"
}

decode() {  # SYSTEM TASK SUBSET [fairseq-generate options]: $work/SYSTEM/SUBSET.TASK.gen, scored
    local system="$1" task="$2" subset="$3" checkpoint; shift 3
    local out="$work/$system/$subset.$task.gen"
    checkpoint="$(decoded_checkpoint "$work/$system")"
    generate_logged "$out" "$data" --task xstnet --eval-task "$task" --gen-subset "$subset" \
        --path "$checkpoint" --max-tokens 500000 --beam "${BEAM:-5}" "$@"
    echo -n "$system $task $subset: "
    score_task "$out" "$task"
}

score_task() { score_speech_task "$1" "$2" "$data"; }  # GEN TASK: scored against test.tsv

cascade() {  # the ASR model's test transcripts -> a text manifest -> the stage-1 MT model
    [ -f "$work/stage1/checkpoint_best.pt" ] || die "cascade: run stage1 first (its MT model)"
    decode asr asr test
    "$python" - "$data/test.tsv" "$work/asr/test.asr.gen" "$data/cascade_test.tsv" <<'PY'
import csv, sys
manifest, gen, out = sys.argv[1:]
with open(manifest, encoding="utf-8", newline="") as f:
    rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
hyp = {}
for line in open(gen, encoding="utf-8"):
    if line.startswith("D-"):
        idx, _, text = line.rstrip("\n")[2:].split("\t", 2)
        hyp[int(idx)] = " ".join(text.split())
with open(out, "w", encoding="utf-8") as f:
    f.write("id\tsrc_text\ttgt_text\tsrc_lang\ttgt_lang\n")
    for i, row in enumerate(rows):  # D- ids are row indices of the manifest
        f.write("\t".join([row["id"], hyp.get(i, ""), row["tgt_text"], row["src_lang"], row["tgt_lang"]]) + "\n")
PY
    mkdir -p "$work/cascade"
    decode stage1 mt cascade_test --train-tasks mt
    cp "$work/stage1/cascade_test.mt.gen" "$work/cascade/test.st.gen"
    echo -n "cascade st test: "; score_task "$work/cascade/test.st.gen" st
}

step_prepare() { prepare_speech "$data" "$src" "$tgt"; }
step_w2v() { pretrain_w2v "$data" "$work/w2v"; }
step_stage1() { train_system stage1; }
step_stage2() { train_system stage2; }
step_evaluate() {
    decode stage2 st test; decode stage2 asr test; decode stage2 mt test
    decode stage1 mt test --train-tasks mt
}
step_st_only() { train_system st_only; decode st_only st test; }
step_cascade() { train_system asr; cascade; }
step_asr() { train_system asr; decode asr asr test; }

run_steps "prepare w2v stage1 stage2 evaluate" "prepare w2v stage1 stage2 evaluate st_only cascade" "$@"
