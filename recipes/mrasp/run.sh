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
#         finetune  each FINETUNE_PAIRS direction alone, from pretrain/checkpoint_best.pt
#                   (--finetune-from-model: weights only, fresh optimizer and schedule, no RAS)
#                   -> WORKDIR/ft.<src>-<tgt>
#         evaluate  decode each fine-tuned direction on the first MAX_EVAL test lines
#         baseline  the same pre-training without RAS (WORKDIR/base_pretrain), the same
#                   fine-tuning (WORKDIR/base_ft.<src>-<tgt>) and evaluation
#         all       prepare pretrain finetune evaluate baseline
#   default: prepare pretrain finetune evaluate
# Training appends to WORKDIR/<model>/train.log (fairseq-train resumes from checkpoint_last.pt);
# validation runs once, at the end (the updates are far below an epoch), on at most VALID_STEPS
# batches. BLEU is case-sensitive detokenised sacreBLEU (sacrebleu.corpus_bleu on the D-/T- lines
# of fairseq-generate -s SRC -t TGT; the target language token is the decoder's first input,
# never --prefix-size), written to WORKDIR/<model>/t<MAX_EVAL>.<src>-<tgt>.gen.
#
# Environment (CPU-sized defaults: about 5 minutes for the default steps on 2 cores, 9 for `all`;
# estimated from the measured run below):
#   LANGS="de fr ro"                         non-English languages of the corpus
#   PRETRAIN_PAIRS=en-de,de-en,en-fr,fr-en   pre-training directions (temperature-sampled, T=2)
#   FINETUNE_PAIRS="en-de en-ro"             fine-tuned (and evaluated) directions
#   RAS_PROB=0.3                             RAS substitution probability (0: plain pre-training)
#   MAX_TRAIN=N                  cap the gettext training pairs per language (default: all)
#   VOCAB_SIZE=N                 joint sentencepiece size (default 4000)
#   ARCH_ARGS="..."              model (default: transformer 2+2 layers, d128, FFN 512, 4 heads,
#                                shared embeddings)
#   MAX_UPDATE_PRE, MAX_UPDATE_FT   updates (default 600, 300); WARMUP_PRE, WARMUP_FT (a tenth)
#   LR_PRE, LR_FT                peak learning rates (default 1e-3, 5e-4)
#   MAX_TOKENS=N                 tokens per batch (default 2000)
#   VALID_STEPS=N  MAX_EVAL=N    validation batches (default 10); test lines decoded (default 100)
#   BEAM=N                       beam size (default 5)
#   TRAIN_EXTRA, GEN_EXTRA       extra fairseq-train / fairseq-generate options (word-split)
#
# Paper settings (Lin et al. 2020, linzehui/mRASP; see ../shared/anchors/multilingual.md), GPUs:
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
#
# Measured (`all` with MAX_UPDATE_PRE=400 MAX_UPDATE_FT=200, gettext/FreeDict already
# extracted, 2-core CPU shared with another job, torch 2.9.1, fairseq 0.12.3): 5m47s wall
# (pre-training 84 s / 56 s of train_wall with / without RAS, the RAS run overlapping another
# job on the same cores; benchmarks/mrasp.py measures 44 s vs 41 s; each fine-tuning 29-31 s, the rest
# start-up, validation and decoding). Test (first 100 sentences), sacreBLEU:
#   mRASP    ft.en-de 0.07, ft.en-ro 0.26;   baseline (no RAS)  base_ft.en-de 0.06, base_ft.en-ro 0.16
#   (pre-training valid loss 8.641 with RAS vs 8.629 without). Models this small and this short
#   produce mostly repetitions; see benchmarks/mrasp.py for the controlled comparison.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[ "$#" -ge 1 ] || { sed -n '2,/^set -euo pipefail/{/^set -euo/!p}' "$0" >&2; exit 2; }
work="$1"; shift
if [ "$#" -eq 0 ]; then steps=(prepare pretrain finetune evaluate); else steps=("$@"); fi
[ "${steps[*]}" = all ] && steps=(prepare pretrain finetune evaluate baseline)
python="${PYTHON:-$repo/.venv/bin/python}"
bin="$(dirname "$python")"
read -r -a langs <<< "${LANGS:-de fr ro}"
pretrain_pairs="${PRETRAIN_PAIRS:-en-de,de-en,en-fr,fr-en}"
read -r -a finetune_pairs <<< "${FINETUNE_PAIRS:-en-de en-ro}"
ras_prob="${RAS_PROB:-0.3}"
max_eval="${MAX_EVAL:-100}"
max_update_pre="${MAX_UPDATE_PRE:-600}"; max_update_ft="${MAX_UPDATE_FT:-300}"
warmup_pre="${WARMUP_PRE:-$(( max_update_pre / 10 > 0 ? max_update_pre / 10 : 1 ))}"
warmup_ft="${WARMUP_FT:-$(( max_update_ft / 10 > 0 ? max_update_ft / 10 : 1 ))}"
beam="${BEAM:-5}"
arch_args="${ARCH_ARGS:---arch transformer --encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 128 --decoder-embed-dim 128 --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512 --encoder-attention-heads 4 --decoder-attention-heads 4 --share-all-embeddings}"
plugin="$repo/ptnmt_fairseq"
mkdir -p "$work"
work="$(cd "$work" && pwd)"; data="$work/data"; dicts="$work/dict"

score() {  # GEN: case-sensitive detokenised sacreBLEU of the D- lines against the T- lines
    "$python" -m ptnmt_fairseq.common.scoring "$1" --detokenized 2> "${1%.gen}.score.log" \
        || { echo "scoring $1 failed (see ${1%.gen}.score.log)" >&2; exit 1; }
}

prepare() {
    [ -f "$work/raw/test.multiway.en" ] && [ -f "$work/raw/test.en-${langs[-1]}.en" ] || \
        MAX_TRAIN="${MAX_TRAIN:-}" PYTHON="$python" bash "$repo/examples/data/prepare_gettext.sh" "$work/raw" "${langs[@]}"
    [ -f "$data/dict.txt" ] || \
        "$python" "$repo/examples/data/prepare_multilingual.py" "$work/raw" "$data" --langs "${langs[@]}" \
            --vocab-size "${VOCAB_SIZE:-4000}"
    local pairs=() lang
    for lang in "${langs[@]}"; do
        case "$lang" in  # FreeDict has no Romanian dictionary
            de) pairs+=(eng-deu deu-eng) ;;
            fr) pairs+=(eng-fra fra-eng) ;;
        esac
    done
    [ -f "$dicts/en-de.txt" ] || PYTHON="$python" bash "$repo/examples/data/prepare_freedict.sh" "$dicts" "${pairs[@]}"
    for lang in "${langs[@]}"; do
        echo "en-$lang: $(wc -l < "$data/train.en-$lang.en") train, $(wc -l < "$data/test.en-$lang.en") test pairs"
    done
    echo "dictionaries: $(cd "$dicts" && wc -l ./*.txt | tr '\n' ' ')"
}

ras_dicts() {  # comma-separated dictionaries present in $dicts
    local files=() f
    for f in "$dicts"/*.txt; do files+=("$f"); done
    (IFS=,; echo "${files[*]}")
}

train() {  # SAVE_DIR [options]: fairseq-train into $work/SAVE_DIR
    local save="$work/$1"; shift
    mkdir -p "$save"
    # shellcheck disable=SC2086
    "$bin/fairseq-train" "$data" --cpu --user-dir "$plugin" --task translation_multi_langtok \
        $arch_args --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
        --optimizer adam --adam-betas '(0.9,0.98)' --lr-scheduler inverse_sqrt \
        --max-tokens "${MAX_TOKENS:-2000}" --max-valid-steps "${VALID_STEPS:-10}" \
        --save-dir "$save" --no-epoch-checkpoints --no-progress-bar --log-format simple \
        --log-interval 50 --seed 1 --num-workers 0 "$@" ${TRAIN_EXTRA:-} 2>&1 | tee -a "$save/train.log" \
        | grep -E "trainable|\| train \||\| valid \||done training|Error" | sed -E 's/^.*\| (train|valid) \|/\1 |/' || true
    [ -f "$save/checkpoint_best.pt" ] || { echo "$(basename "$save"): training failed (see $save/train.log)" >&2; exit 1; }
}

pretrain() {  # SAVE_DIR RAS_PROB
    local ras=()
    if [ "$(awk -v p="$2" 'BEGIN { print (p > 0) }')" = 1 ]; then
        ras=(--ras-dicts "$(ras_dicts)" --ras-prob "$2")
    fi
    echo "-- $1: $pretrain_pairs, RAS ${2}"
    train "$1" --lang-pairs "$pretrain_pairs" "${ras[@]}" --lr "${LR_PRE:-1e-3}" \
        --warmup-updates "$warmup_pre" --max-update "$max_update_pre"
}

finetune() {  # PRETRAINED_DIR PREFIX: PREFIX.<pair> for every FINETUNE_PAIRS direction
    local pre="$work/$1/checkpoint_best.pt" pair
    [ -f "$pre" ] || { echo "no $pre: run the pre-training step first" >&2; exit 1; }
    for pair in "${finetune_pairs[@]}"; do
        echo "-- $2.$pair from $1"
        train "$2.$pair" --lang-pairs "$pair" --finetune-from-model "$pre" --lr "${LR_FT:-5e-4}" \
            --warmup-updates "$warmup_ft" --max-update "$max_update_ft"
    done
}

decode() {  # MODEL_DIR SRC-TGT: $work/MODEL_DIR/t<MAX_EVAL>.SRC-TGT.gen and its BLEU
    local model="$1" dir="$2" s t lang
    s="${dir%-*}"; t="${dir#*-}"
    for lang in "$s" "$t"; do
        [ -f "$data/t$max_eval.$dir.$lang" ] || head -n "$max_eval" "$data/test.$dir.$lang" > "$data/t$max_eval.$dir.$lang"
    done
    local out="$work/$model/t$max_eval.$dir.gen"
    # shellcheck disable=SC2086
    "$bin/fairseq-generate" "$data" --user-dir "$plugin" --cpu --task translation_multi_langtok \
        -s "$s" -t "$t" --gen-subset "t$max_eval" --path "$work/$model/checkpoint_best.pt" \
        --beam "$beam" --max-tokens 4000 --scoring sacrebleu ${GEN_EXTRA:-} > "$out" 2> "${out%.gen}.log" \
        || { echo "$model: fairseq-generate $dir failed (see ${out%.gen}.log)" >&2; exit 1; }
    echo -n "$model $dir: "
    score "$out"
}

evaluate() {  # PREFIX: decode PREFIX.<pair> on <pair>
    local pair
    for pair in "${finetune_pairs[@]}"; do decode "$1.$pair" "$pair"; done
}

for step in "${steps[@]}"; do
    echo "== $step"
    case "$step" in
        prepare) prepare ;;
        pretrain) pretrain pretrain "$ras_prob" ;;
        finetune) finetune pretrain ft ;;
        evaluate) evaluate ft ;;
        baseline) pretrain base_pretrain 0; finetune base_pretrain base_ft; evaluate base_ft ;;
        *) echo "unknown step $step (prepare pretrain finetune evaluate baseline all)" >&2; exit 2 ;;
    esac
done
