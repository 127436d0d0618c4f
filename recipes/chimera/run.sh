#!/usr/bin/env bash
# Chimera pipeline (Han et al., Findings of ACL 2021) on synthesised speech (espeak-ng over
# gettext): prepare -> wav2vec 2.0 -> stage 1 (MT pre-training through the shared semantic
# memory) -> stage 2 (ST + MT + contrastive, external MT kept) -> evaluate.
#
# Usage: recipes/chimera/run.sh WORKDIR [STEP...]
#   STEP: prepare  gettext SRC-TGT corpus, espeak-ng speech for MAX_SPEECH train / MAX_EVAL
#                  valid and test lines, joint sentencepiece, dict, config.yaml and the external
#                  MT pairs (gettext train pairs whose source is not a speech transcript)
#         w2v      pre-train a small wav2vec 2.0 (pretrain_wav2vec2.sh), unless W2V_PATH is set
#         stage1   MT pre-training: the text path and the memory on the triples' text + external MT
#         stage2   ST fine-tuning from stage 1: ST + MT + contrastive on the triples, external MT
#                  batches kept in the mix
#         evaluate ST BLEU and MT BLEU of stage 2 on the test split (also stage 1's MT BLEU)
#         no_mt    the comparison without external MT: ST + MT + contrastive on the triples
#                  alone, from scratch, for the budget of both stages (updates or minutes),
#                  with stage 2's learning rate and warm-up
#         all      every step above
#   default: prepare w2v stage1 stage2 evaluate
# Every system trains in WORKDIR/<system>/ (train.log appended; fairseq-train resumes from
# checkpoint_last.pt) and decodes checkpoint_best.pt (lowest valid loss; with AVERAGE=N,
# checkpoint_avg.pt) into WORKDIR/<system>/test.<task>.gen. BLEU is case-sensitive sacreBLEU (13a)
# of the detokenised D- lines against the raw translations of the test manifest (tgt_text of
# WORKDIR/data/test.tsv), never fairseq's T- lines.
#
# Environment (CPU-sized defaults):
#   SRC=en TGT=fr                 direction; SRC is spoken (the gettext corpus is English-centric)
#   MAX_SPEECH=N  MAX_EVAL=N      speech triples for train / valid and test (default 2000, 200)
#   MAX_TRAIN=N                   cap the gettext training pairs (the external MT; default: all)
#   VOCAB_SIZE=N                  joint sentencepiece size (default 1000)
#   W2V_PATH=CKPT                 a fairseq wav2vec 2.0 checkpoint (e.g. wav2vec_small.pt);
#                                 otherwise W2V_UPDATE (default 200) updates of a small one
#   SPEECH_FRONTEND=fbank         80-dim log-mel filterbanks + fairseq's convolutional subsampler
#                                 instead of wav2vec 2.0 (the w2v step is skipped)
#   FREEZE_W2V=1                  keep wav2vec 2.0 frozen (the authors fine-tune it)
#   ARCH=chimera_tiny|chimera     model preset (default chimera_tiny: 2+2 layers, d128)
#   MEMORY_SLOTS=M                memory size (default 64, the authors' scripts)
#   MEMORY_LAYERS=N               memory layers (default: the preset's, 2 tiny, 3 chimera)
#   CONTRASTIVE_WEIGHT=W          weight of the contrastive loss (default 1)
#   MAX_UPDATE_MT, MAX_UPDATE_ST  updates of stage 1 / of stage 2 (default 800, 800; no_mt: both);
#                                 WARMUP_MT, WARMUP_ST (default a tenth of them)
#   MINUTES_MT, MINUTES_ST        wall-clock budgets (--stop-time-hours) instead of updates
#   LR_MT, LR_ST                  peak learning rates (default 1e-3, 1e-3)
#   MAX_TOKENS=N                  audio samples per speech batch (default 400000 = 25 s)
#   MAX_TOKENS_TEXT=N             tokens per text-only batch (default 2000)
#   EXTERNAL_MT_RATIO=F           fraction of the external-MT batches used per stage-2 epoch
#                                 (default 0.25)
#   AVERAGE=N  SAVE_INTERVAL=K    decode the average of the N newest checkpoints, one saved every
#                                 K updates (default 100; the authors average 7)
#   BEAM=N  LENPEN=F              beam size and length penalty (default 5, 1.0)
#   TRAIN_EXTRA, GEN_EXTRA        extra fairseq-train / fairseq-generate options (word-split)
#
# Paper settings (Han et al., 2021; the authors' code Glaciohound/Chimera-ST: the
# s2t_transformer_w2v2_interlingua architecture and its training scripts), for GPUs on MuST-C
# with WMT as external MT:
#   W2V_PATH=wav2vec_small.pt (self-supervised Base, fine-tuned, raw waveform); ARCH=chimera:
#   wav2vec 2.0 -> 2x Conv1d stride 2 -> 6-layer encoder, d512, FFN 2048, 8 heads, pre-norm,
#   dropout 0.1; memory of 64 slots over 3 layers; 6-layer decoder over the memory only; joint
#   spm unigram 10k (VOCAB_SIZE=10000) over WMT + MuST-C text; loss ST + MT + contrastive
#   (1:1:1, temperature 0.1), label smoothing 0.1;
#   stage 1 (MT, WMT + MuST-C text): lr 5e-4, warm-up 4000, 4096 tokens x 8 GPUs, weight decay
#   1e-4, 500k updates;
#   stage 2 (ST): lr 1e-4, the optimiser reset, batches of 2M samples (update-freq 8 / GPUs),
#   150k updates; decode beam 10, length penalty 1.5, the average of 7 checkpoints.
#   e.g. W2V_PATH=wav2vec_small.pt ARCH=chimera VOCAB_SIZE=10000 LR_MT=5e-4 WARMUP_MT=4000 \
#        LR_ST=1e-4 MAX_TOKENS=2000000 MAX_TOKENS_TEXT=4096 BEAM=10 LENPEN=1.5 AVERAGE=7 \
#        TRAIN_EXTRA="--weight-decay 1e-4"
#   Reported MuST-C tst-COMMON BLEU: En-De 27.1 (26.3 in an earlier README), En-Fr 35.6.
# Models this small and this short do not learn speech yet: benchmarks/chimera.py is the
# controlled comparison; measured runs are in the README and benchmarks/results/chimera.json.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
set_workdir "$@"; shift
data="$work/data"
src="${SRC:-en}"; tgt="${TGT:-fr}"
max_update_mt="${MAX_UPDATE_MT:-800}"; max_update_st="${MAX_UPDATE_ST:-800}"
warmup_mt="${WARMUP_MT:-$(tenth_of "$max_update_mt")}"
warmup_st="${WARMUP_ST:-$(tenth_of "$max_update_st")}"
w2v="${W2V_PATH:-$work/w2v/checkpoint_best.pt}"
set_speech_frontend "$w2v"
common_train=(--task chimera --arch "${ARCH:-chimera_tiny}" "${speech_frontend[@]}"
    --memory-slots "${MEMORY_SLOTS:-64}" --criterion chimera_st_mt_contrastive
    --contrastive-weight "${CONTRASTIVE_WEIGHT:-1}" --label-smoothing 0.1 --optimizer adam
    --adam-betas '(0.9,0.98)' --lr-scheduler inverse_sqrt --clip-norm 10
    --max-tokens "${MAX_TOKENS:-400000}" --max-tokens-text "${MAX_TOKENS_TEXT:-2000}"
    --skip-bad-audio --log-interval 20)
if [ -n "${MEMORY_LAYERS:-}" ]; then common_train+=(--memory-layers "$MEMORY_LAYERS"); fi
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
        stage2)  # from the MT model (optimiser reset), external MT stays in the mix
            [ -f "$work/stage1/checkpoint_best.pt" ] || die "run stage1 first"
            args=(--train-tasks st,mt --external-mt train_mt.tsv
                  --external-mt-ratio "${EXTERNAL_MT_RATIO:-0.25}"
                  --finetune-from-model "$work/stage1/checkpoint_best.pt") ;;
        no_mt)   # the triples only (no external MT, no stage 1), for both stages' budget
            local minutes=""
            if [ -n "${MINUTES_MT:-}" ] && [ -n "${MINUTES_ST:-}" ]; then
                minutes="$(awk -v a="$MINUTES_MT" -v b="$MINUTES_ST" 'BEGIN { print a + b }')"
            elif [ -n "${MINUTES_MT:-}${MINUTES_ST:-}" ]; then
                die "no_mt trains for both stages' budget: set both MINUTES_MT and MINUTES_ST, or neither"
            fi
            # shellcheck disable=SC2207
            args=(--train-tasks st,mt --lr "${LR_ST:-1e-3}" --warmup-updates "$warmup_st"
                  $(budget_options "$((max_update_mt + max_update_st))" "$minutes")) ;;
        *) die "unknown system $system" ;;
    esac
    if [ "$system" = stage2 ]; then
        # shellcheck disable=SC2207
        args+=(--lr "${LR_ST:-1e-3}" --warmup-updates "$warmup_st"
               $(budget_options "$max_update_st" "${MINUTES_ST:-}"))
    fi
    train_logged "$work/$system" "$data" "${common_train[@]}" "${args[@]}"
}

decode() {  # SYSTEM TASK [fairseq-generate options]: $work/SYSTEM/test.TASK.gen, scored
    local system="$1" task="$2" checkpoint; shift 2
    local out="$work/$system/test.$task.gen"
    checkpoint="$(decoded_checkpoint "$work/$system")"
    generate_logged "$out" "$data" --task chimera --eval-task "$task" --gen-subset test \
        --path "$checkpoint" --max-tokens 500000 --max-tokens-text 4000 --beam "${BEAM:-5}" \
        --lenpen "${LENPEN:-1.0}" "$@"
    echo -n "$system $task test: "
    score_speech_task "$out" "$task" "$data"
}

step_prepare() { prepare_speech "$data" "$src" "$tgt"; }
step_w2v() { pretrain_w2v "$data" "$work/w2v"; }
step_stage1() { train_system stage1; }
step_stage2() { train_system stage2; }
step_evaluate() { decode stage2 st; decode stage2 mt; decode stage1 mt --train-tasks mt; }
step_no_mt() { train_system no_mt; decode no_mt st; decode no_mt mt; }

run_steps "prepare w2v stage1 stage2 evaluate" "prepare w2v stage1 stage2 evaluate no_mt" "$@"
