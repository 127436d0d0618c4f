#!/usr/bin/env bash
# mRASP pipeline (Lin et al., EMNLP 2020) on gettext en<->de, en<->fr, en-ro (CPU):
# prepare -> pre-train one many-to-many model with random aligned substitution (RAS) ->
# fine-tune it on one pre-trained pair (en-de) and on a pair unseen in pre-training (en-ro) ->
# evaluate BLEU of the fine-tuned directions; `baseline` repeats it all without RAS.
#
# Usage: recipes/mrasp/run.sh WORKDIR [STEP...]
#   STEP: prepare   gettext corpus for LANGS (prepare_gettext.sh), both directions + joint
#                   sentencepiece + dict.txt with LANG_TOK_XX for every language
#                   (prepare_multilingual.py; LANG_TOK_RO is there before fine-tuning on en-ro),
#                   FreeDict word dictionaries en-de en-fr de-en fr-en (prepare_freedict.sh;
#                   FreeDict has no Romanian, so RAS never produces Romanian words)
#         pretrain  PRETRAIN_PAIRS with RAS (RAS_PROB) on the training sources -> WORKDIR/pretrain
#         finetune  each FINETUNE_PAIRS direction alone, from PRETRAINED/checkpoint_best.pt
#                   (default pretrain)
#                   (--finetune-from-model: weights only, fresh optimizer and schedule, no RAS)
#                   -> WORKDIR/ft.<src>-<tgt>
#         evaluate  decode each fine-tuned direction on the first MAX_EVAL test lines
#         baseline  the same pre-training without RAS (WORKDIR/base_pretrain), the same
#                   fine-tuning (WORKDIR/base_ft.<src>-<tgt>) and evaluation
#         scratch   each FINETUNE_PAIRS direction from random initialisation, with the
#                   fine-tuning budget (WORKDIR/scratch.<src>-<tgt>), and its evaluation: what
#                   pre-training is compared with on an unseen pair (the paper's central claim)
#         all       prepare pretrain finetune evaluate baseline scratch
#   default: prepare pretrain finetune evaluate
# Training appends to WORKDIR/<model>/train.log (fairseq-train resumes from checkpoint_last.pt);
# validation runs at each epoch's end and when the budget ends (once, for budgets below an
# epoch), on at most VALID_STEPS batches. fairseq-generate -s SRC -t TGT decodes the first MAX_EVAL test lines into
# WORKDIR/<model>/t<MAX_EVAL>.<src>-<tgt>.gen (the target language token is the decoder's first
# input, never --prefix-size); BLEU is case-sensitive sacreBLEU (13a) of its detokenised D- lines
# against the raw target text of those lines, WORKDIR/data/t<MAX_EVAL>.<src>-<tgt>.<tgt> (never
# fairseq's T- lines, rebuilt from ids).
#
# Environment (CPU-sized defaults):
#   LANGS="de fr ro"                         non-English languages of the corpus
#   PRETRAIN_PAIRS=en-de,de-en,en-fr,fr-en   pre-training directions (temperature-sampled, T=2)
#   FINETUNE_PAIRS="en-de en-ro"             fine-tuned (and evaluated) directions
#   PRETRAINED=pretrain                      the model folder under WORKDIR that `finetune` starts
#                                            from (e.g. mrasp, trained by recipes/mrasp2/run.sh)
#   RAS_PROB=0.3                             RAS substitution probability (0: plain pre-training)
#   MAX_TRAIN=N                  cap the gettext training pairs per language (default: all)
#   VOCAB_SIZE=N                 joint sentencepiece size (default 4000)
#   ARCH_ARGS="..."              model (default: transformer 2+2 layers, d128, FFN 512, 4 heads,
#                                shared embeddings)
#   MAX_UPDATE_PRE, MAX_UPDATE_FT   updates (default 600, 300); WARMUP_PRE, WARMUP_FT (a tenth)
#   MINUTES_PRE, MINUTES_FT      wall-clock budgets instead (whichever of updates and minutes ends
#                                first); the benchmark's standard mode gives every system the same
#   LR_PRE, LR_FT                peak learning rates (default 1e-3, 5e-4)
#   MAX_TOKENS=N                 tokens per batch (default 2000)
#   VALID_STEPS=N  MAX_EVAL=N    validation batches (default 10); test lines decoded (default 100;
#                                all: the whole test split)
#   AVERAGE=N  SAVE_INTERVAL=K   decode the average of the N newest checkpoints, one saved every K
#                                updates (default 100; python -m ptnmt_fairseq.average_checkpoints)
#   BEAM=N                       beam size (default 5)
#   TRAIN_EXTRA, GEN_EXTRA       extra fairseq-train / fairseq-generate options (word-split)
# Models this small and this short produce mostly repetitions: benchmarks/mrasp.py is the
# controlled comparison; measured runs are in the README and benchmarks/results/mrasp.json.
#
# Paper settings (Lin et al., EMNLP 2020; linzehui/mRASP: the RAS probability and dictionary size
# from the paper vs preprocess/tools/ras/replace_word.py, pre-training from
# experiments/example/configs/train/pre-train/transformer_big.yml and train/pre-train.sh,
# fine-tuning from experiments/fine-tune-configs/en2{de,fr,ro}_config.yml, decoding from
# experiments/example/configs/eval/en2de_eval.yml, scores from README.md), GPUs:
#   PC32 (32 English-centric pairs, 64 directions); transformer_wmt_en_de_big 6+6 d1024 (GELU,
#   learned positions, shared embeddings); RAS p 0.3 over the top 1000 words (paper; the code's
#   replace_word.py uses 0.15 over 2000), MUSE en-xx dictionaries, substituted copies appended to
#   the originals (offline; here RAS is online, re-sampled each epoch); BPE 32k merges; Adam
#   (0.9, 0.98) lr 5e-4 inverse_sqrt warmup 4k, dropout 0.2, LS 0.1, 4096 tokens, 100k updates;
#   fine-tune lr 1e-4, dropout 0.3, 11000 tokens x update_freq 10, 40k updates; decode beam 5
#   lenpen 0.5 from top-k averaged checkpoints, tokenised BLEU. e.g.
#     ARCH_ARGS="--arch transformer_wmt_en_de_big --share-all-embeddings --activation-fn gelu"
#     VOCAB_SIZE=32000 MAX_TOKENS=4096 LR_PRE=5e-4 WARMUP_PRE=4000 MAX_UPDATE_PRE=100000
#     LR_FT=1e-4 MAX_UPDATE_FT=40000 TRAIN_EXTRA="--dropout 0.2" GEN_EXTRA="--lenpen 0.5"
#   Reported (README, tokenised BLEU): En->De 30.3, En->Fr 44.3, En->Ro 39.0, Ro->En 37.7.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
set_workdir "$@"; shift
data="$work/data"; dicts="$work/dict"
read -r -a langs <<< "${LANGS:-de fr ro}"
pretrain_pairs="${PRETRAIN_PAIRS:-en-de,de-en,en-fr,fr-en}"
read -r -a finetune_pairs <<< "${FINETUNE_PAIRS:-en-de en-ro}"
max_eval="${MAX_EVAL:-100}"
max_update_pre="${MAX_UPDATE_PRE:-600}"; max_update_ft="${MAX_UPDATE_FT:-300}"
warmup_pre="${WARMUP_PRE:-$(tenth_of "$max_update_pre")}"
warmup_ft="${WARMUP_FT:-$(tenth_of "$max_update_ft")}"

pretrain() {  # MODEL RAS_PROB: PRETRAIN_PAIRS into $work/MODEL, with RAS when RAS_PROB > 0
    local ras=()
    if [ "$(awk -v p="$2" 'BEGIN { print (p > 0) }')" = 1 ]; then
        ras=(--ras-dicts "$(comma_list "$dicts"/*.txt)" --ras-prob "$2")
    fi
    echo "-- $1: $pretrain_pairs, RAS ${2}"
    # shellcheck disable=SC2046
    train_multilingual translation_multi_langtok "$work/$1" "$data" --criterion label_smoothed_cross_entropy \
        --lang-pairs "$pretrain_pairs" "${ras[@]}" --lr "${LR_PRE:-1e-3}" \
        --warmup-updates "$warmup_pre" $(budget_options "$max_update_pre" "${MINUTES_PRE:-}")
}

finetune() {  # PRETRAINED PREFIX: $work/PREFIX.<pair> for every FINETUNE_PAIRS direction
    local pre="$work/$1/checkpoint_best.pt" pair
    [ -f "$pre" ] || die "no $pre: run the pre-training step first"
    for pair in "${finetune_pairs[@]}"; do
        echo "-- $2.$pair from $1"
        finetune_one "$work/$2.$pair" "$pair" --finetune-from-model "$pre"
    done
}

finetune_one() {  # SAVE_DIR PAIR OPTIONS...: PAIR alone with the fine-tuning budget, no RAS
    local save="$1" pair="$2"
    shift 2
    # shellcheck disable=SC2046
    train_multilingual translation_multi_langtok "$save" "$data" --criterion label_smoothed_cross_entropy \
        --lang-pairs "$pair" --lr "${LR_FT:-5e-4}" --warmup-updates "$warmup_ft" \
        $(budget_options "$max_update_ft" "${MINUTES_FT:-}") "$@"
}

from_scratch() {  # every FINETUNE_PAIRS direction from random initialisation into $work/scratch.<pair>
    local pair
    for pair in "${finetune_pairs[@]}"; do
        echo "-- scratch.$pair from random initialisation"
        finetune_one "$work/scratch.$pair" "$pair"
    done
}

evaluate() {  # PREFIX: decode $work/PREFIX.<pair> on <pair>
    local pair
    for pair in "${finetune_pairs[@]}"; do decode_multilingual "$data" "$work/$1.$pair" "$pair" "$max_eval"; done
}

step_prepare() {
    prepare_multilingual "$work/raw" "$data" "$dicts" "${langs[@]}"
    echo "dictionaries: $(line_counts "$dicts")"
}
step_pretrain() { pretrain pretrain "${RAS_PROB:-0.3}"; }
step_finetune() { finetune "${PRETRAINED:-pretrain}" ft; }
step_evaluate() { evaluate ft; }
step_baseline() { pretrain base_pretrain 0; finetune base_pretrain base_ft; evaluate base_ft; }
step_scratch() { from_scratch; evaluate scratch; }

run_steps "prepare pretrain finetune evaluate" "prepare pretrain finetune evaluate baseline scratch" "$@"
