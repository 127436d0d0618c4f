#!/usr/bin/env bash
# mRASP2 pipeline (Pan et al., ACL 2021) on gettext en<->de, en<->fr (CPU):
# prepare -> train one many-to-many model with RAS + aligned augmentation (AA) + contrastive loss
# -> evaluate supervised BLEU, zero-shot BLEU (de<->fr, never seen in training) and sentence
# retrieval accuracy on the multi-way test set.
#
# Usage: recipes/mrasp2/run.sh WORKDIR [STEP...]
#   STEP: prepare   gettext corpus for LANGS (prepare_gettext.sh), both directions + zero-shot
#                   test files + joint sentencepiece + dict.txt with LANG_TOK_XX
#                   (prepare_multilingual.py), FreeDict word dictionaries en-de en-fr de-en fr-en
#                   (prepare_freedict.sh), and the monolingual AA text train.mono.<lang> for each
#                   MONO_LANGS language: the non-English side of the en-<lang> training pairs
#                   (the same sentences as the parallel data, used without their English side;
#                   the paper adds separate news-crawl text)
#         train     mRASP2: RAS (RAS_PROB) on the parallel sources + AA (AA_PROB) on the mono
#                   text + label_smoothed_cross_entropy_with_contrastive (LAMBDA, TAU)
#         evaluate  decode mrasp2: SUPERVISED and ZEROSHOT directions on the first MAX_EVAL test
#                   lines, retrieval accuracy over RETRIEVAL_LANGS
#         baseline  the multilingual Transformer (m-Transformer: no RAS, no AA, plain label-smoothed
#                   CE), the same budget; trained and evaluated
#         mrasp     RAS only (mRASP pre-training objective), the same budget; trained and evaluated
#         all       prepare train evaluate baseline mrasp
#   default: prepare train evaluate
# Every system trains in WORKDIR/<system>/ (train.log appended; fairseq-train resumes from
# checkpoint_last.pt) and decodes checkpoint_best.pt into WORKDIR/<system>/t<MAX_EVAL>.<src>-<tgt>.gen.
# Validation runs once, at the end (MAX_UPDATE is far below an epoch), on at most VALID_STEPS
# batches. BLEU is case-sensitive detokenised sacreBLEU (sacrebleu.corpus_bleu on the D-/T-
# lines; the target language token is the decoder's first input, never --prefix-size).
# Retrieval: python -m ptnmt_fairseq.mrasp2.retrieval (masked mean of the encoder states, cosine,
# top-1, mean over ordered pairs), written to WORKDIR/<system>/retrieval.json.
#
# Environment (CPU-sized defaults: about 4 minutes for the default steps on 2 cores, 9 for `all`):
#   LANGS="de fr"                 non-English languages of the corpus (English-centric)
#   TRAIN_PAIRS=en-de,de-en,en-fr,fr-en   training directions (temperature-sampled, T=2)
#   MONO_LANGS=de,fr              languages with AA monolingual text
#   SUPERVISED="en-de de-en en-fr fr-en"  ZEROSHOT="de-fr fr-de"   evaluated directions
#   RETRIEVAL_LANGS="en de fr"    MAX_EVAL=N  test lines decoded per direction (default 100)
#   RAS_PROB=0.3  AA_PROB=0.9  LAMBDA=1.0  TAU=0.1
#   MAX_TRAIN=N                   cap the gettext training pairs per language (default: all)
#   VOCAB_SIZE=N                  joint sentencepiece size (default 4000)
#   ARCH_ARGS="..."               model (default: transformer 2+2 layers, d128, FFN 512, 4 heads,
#                                 shared embeddings)
#   MAX_UPDATE=N  WARMUP=N  LR=F  MAX_TOKENS=N   (default 600, MAX_UPDATE/10, 1e-3, 2000)
#   VALID_STEPS=N                 validation batches (default 10)
#   BEAM=N                        beam size (default 5)
#   TRAIN_EXTRA, GEN_EXTRA        extra fairseq-train / fairseq-generate options (word-split)
#
# Paper settings (Pan et al. 2021, PANXiao1994/mRASP2 master 12e12d and new_impl; see
# ../shared/anchors/multilingual.md), on PC32 + news-crawl mono, 32 V100:
#   contrastive lambda 1.0, temperature 0.1, masked mean pooling (lang token and EOS included),
#   negatives = the other targets of the per-GPU batch; 12+12 layers pre-norm big_t2t with
#   layernorm_embedding, no_scale_embedding, dropout 0.1; Adam eps 1e-6, lr 3e-4 polynomial decay
#   warmup 10k, wd 0.01, clip 10, 1536 tokens x update_freq 30; AA substitution 0.9 (new_impl,
#   mono sentences with no swap get <mask> noise 0.2: not implemented here); BPE 32k (master) or
#   spm 100k (new_impl). e.g.
#     ARCH_ARGS="--arch transformer_wmt_en_de_big --encoder-layers 12 --decoder-layers 12
#       --encoder-normalize-before --decoder-normalize-before --layernorm-embedding
#       --no-scale-embedding --share-all-embeddings" LR=3e-4 WARMUP=10000 VOCAB_SIZE=32000
#     TRAIN_EXTRA="--lr-scheduler polynomial_decay --total-num-update 150000 --weight-decay 0.01
#       --clip-norm 10 --adam-eps 1e-6 --update-freq 30"
#   (the later --lr-scheduler wins over the recipe's inverse_sqrt).
#   Reported (README, released 12e12d): zero-shot sacreBLEU de->fr 24.7, fr->de 18.9 (fr->zh 42.3,
#   zh->fr 32.9); en->de 29.5, de->en 35.2 tokenised BLEU; Ted-M retrieval top-1 89.6 (mRASP2),
#   84.4 (without AA), 79.8 (m-Transformer).
#
# Measured with the defaults (prepare train evaluate; gettext/FreeDict already extracted; 2-core
# CPU shared with another job, torch 2.9.1, fairseq 0.12.3): 3m34s wall (train_wall 144 s for 600
# updates, final train contrastive_loss 1.96). First 100 test sentences, sacreBLEU: en-de 0.29,
# de-en 0.33, en-fr 0.38, fr-en 0.17; zero-shot de-fr 0.26, fr-de 0.28 (output in the target
# language, mostly repetitions); retrieval top-1 (en de fr, 215 sentences) 61.5%.
# `all` with MAX_UPDATE=250 (benchmarks/mrasp.py --quick, 6m13s with the loading measurement):
# retrieval 23.2% baseline, 26.6% mRASP, 48.2% mRASP2; BLEU 0.06-0.41 for every system.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[ "$#" -ge 1 ] || { sed -n '2,/^set -euo pipefail/{/^set -euo/!p}' "$0" >&2; exit 2; }
work="$1"; shift
if [ "$#" -eq 0 ]; then steps=(prepare train evaluate); else steps=("$@"); fi
[ "${steps[*]}" = all ] && steps=(prepare train evaluate baseline mrasp)
python="${PYTHON:-$repo/.venv/bin/python}"
bin="$(dirname "$python")"
read -r -a langs <<< "${LANGS:-de fr}"
train_pairs="${TRAIN_PAIRS:-en-de,de-en,en-fr,fr-en}"
mono_langs="${MONO_LANGS:-de,fr}"
read -r -a supervised <<< "${SUPERVISED:-en-de de-en en-fr fr-en}"
read -r -a zeroshot <<< "${ZEROSHOT:-de-fr fr-de}"
read -r -a retrieval_langs <<< "${RETRIEVAL_LANGS:-en de fr}"
max_eval="${MAX_EVAL:-100}"
max_update="${MAX_UPDATE:-600}"
warmup="${WARMUP:-$(( max_update / 10 > 0 ? max_update / 10 : 1 ))}"
beam="${BEAM:-5}"
arch_args="${ARCH_ARGS:---arch transformer --encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 128 --decoder-embed-dim 128 --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512 --encoder-attention-heads 4 --decoder-attention-heads 4 --share-all-embeddings}"
plugin="$repo/ptnmt_fairseq"
mkdir -p "$work"
work="$(cd "$work" && pwd)"; data="$work/data"; dicts="$work/dict"

prepare() {
    [ -f "$work/raw/test.multiway.en" ] && [ -f "$work/raw/test.en-${langs[-1]}.en" ] || \
        MAX_TRAIN="${MAX_TRAIN:-}" PYTHON="$python" bash "$repo/examples/data/prepare_gettext.sh" "$work/raw" "${langs[@]}"
    [ -f "$data/dict.txt" ] || \
        "$python" "$repo/examples/data/prepare_multilingual.py" "$work/raw" "$data" --langs "${langs[@]}" \
            --vocab-size "${VOCAB_SIZE:-4000}"
    local pairs=() lang
    for lang in "${langs[@]}"; do
        case "$lang" in  # FreeDict has no Romanian
            de) pairs+=(eng-deu deu-eng) ;;
            fr) pairs+=(eng-fra fra-eng) ;;
        esac
    done
    [ -f "$dicts/en-de.txt" ] || PYTHON="$python" bash "$repo/examples/data/prepare_freedict.sh" "$dicts" "${pairs[@]}"
    for lang in ${mono_langs//,/ }; do
        [ -f "$data/train.mono.$lang" ] || cp "$data/train.en-$lang.$lang" "$data/train.mono.$lang"
    done
    for lang in "${langs[@]}"; do
        echo "en-$lang: $(wc -l < "$data/train.en-$lang.en") train, $(wc -l < "$data/test.en-$lang.en") test pairs"
    done
    echo "multi-way test: $(wc -l < "$data/test.multiway.en") sentences; dictionaries: $(cd "$dicts" && wc -l ./*.txt | tr '\n' ' ')"
}

ras_dicts() {  # comma-separated dictionaries present in $dicts
    local files=() f
    for f in "$dicts"/*.txt; do files+=("$f"); done
    (IFS=,; echo "${files[*]}")
}

train_system() {  # SYSTEM: fairseq-train into $work/SYSTEM
    local system="$1" save="$work/$1" args
    case "$system" in
        mrasp2)   args=(--ras-dicts "$(ras_dicts)" --ras-prob "${RAS_PROB:-0.3}" --mono-langs "$mono_langs"
                        --aa-prob "${AA_PROB:-0.9}" --criterion label_smoothed_cross_entropy_with_contrastive
                        --contrastive-lambda "${LAMBDA:-1.0}" --temperature "${TAU:-0.1}") ;;
        mrasp)    args=(--ras-dicts "$(ras_dicts)" --ras-prob "${RAS_PROB:-0.3}" --criterion label_smoothed_cross_entropy) ;;
        baseline) args=(--criterion label_smoothed_cross_entropy) ;;
        *) echo "unknown system $system" >&2; exit 2 ;;
    esac
    mkdir -p "$save"
    # shellcheck disable=SC2086
    "$bin/fairseq-train" "$data" --cpu --user-dir "$plugin" --task translation_multi_langtok \
        --lang-pairs "$train_pairs" $arch_args "${args[@]}" --label-smoothing 0.1 \
        --optimizer adam --adam-betas '(0.9,0.98)' --lr "${LR:-1e-3}" --lr-scheduler inverse_sqrt \
        --warmup-updates "$warmup" --max-update "$max_update" --max-tokens "${MAX_TOKENS:-2000}" \
        --max-valid-steps "${VALID_STEPS:-10}" --save-dir "$save" --no-epoch-checkpoints \
        --no-progress-bar --log-format simple --log-interval 50 --seed 1 --num-workers 0 \
        ${TRAIN_EXTRA:-} 2>&1 | tee -a "$save/train.log" \
        | grep -E "trainable|\| train \||\| valid \||done training|Error" | sed -E 's/^.*\| (train|valid) \|/\1 |/' || true
    [ -f "$save/checkpoint_best.pt" ] || { echo "$system: training failed (see $save/train.log)" >&2; exit 1; }
}

subset() {  # SRC TGT: the first MAX_EVAL lines of test.SRC-TGT as t<MAX_EVAL>.SRC-TGT
    local s="$1" t="$2" lang
    for lang in "$s" "$t"; do
        [ -f "$data/t$max_eval.$s-$t.$lang" ] || head -n "$max_eval" "$data/test.$s-$t.$lang" > "$data/t$max_eval.$s-$t.$lang"
    done
}

decode() {  # SYSTEM SRC-TGT [label]: $work/SYSTEM/t<MAX_EVAL>.SRC-TGT.gen and its BLEU
    local system="$1" dir="$2" label="${3:-}" s t
    s="${dir%-*}"; t="${dir#*-}"
    subset "$s" "$t"
    local out="$work/$system/t$max_eval.$dir.gen"
    # shellcheck disable=SC2086
    "$bin/fairseq-generate" "$data" --user-dir "$plugin" --cpu --task translation_multi_langtok \
        -s "$s" -t "$t" --gen-subset "t$max_eval" --path "$work/$system/checkpoint_best.pt" \
        --beam "$beam" --max-tokens 4000 --scoring sacrebleu ${GEN_EXTRA:-} > "$out" 2> "${out%.gen}.log" \
        || { echo "$system: fairseq-generate $dir failed (see ${out%.gen}.log)" >&2; exit 1; }
    echo -n "$system $dir$label: "
    score "$out"
}

score() {  # GEN: case-sensitive detokenised sacreBLEU of the D- lines against the T- lines
    "$python" -m ptnmt_fairseq.common.scoring "$1" --detokenized 2> "${1%.gen}.score.log" \
        || { echo "scoring $1 failed (see ${1%.gen}.score.log)" >&2; exit 1; }
}

evaluate() {  # SYSTEM
    local system="$1" dir
    [ -f "$work/$system/checkpoint_best.pt" ] || { echo "$system: no checkpoint, train it first" >&2; exit 1; }
    for dir in "${supervised[@]}"; do decode "$system" "$dir"; done
    for dir in "${zeroshot[@]}"; do decode "$system" "$dir" " (zero-shot)"; done
    "$python" -m ptnmt_fairseq.mrasp2.retrieval "$data" --path "$work/$system/checkpoint_best.pt" \
        --langs "${retrieval_langs[@]}" > "$work/$system/retrieval.json" 2> "$work/$system/retrieval.log" \
        || { echo "$system: retrieval failed (see $work/$system/retrieval.log)" >&2; exit 1; }
    echo "$system retrieval: $(cat "$work/$system/retrieval.json")"
}

cd "$repo"  # python -m ptnmt_fairseq.mrasp2.retrieval imports the plugin from the repository
for step in "${steps[@]}"; do
    echo "== $step"
    case "$step" in
        prepare) prepare ;;
        train) train_system mrasp2 ;;
        evaluate) evaluate mrasp2 ;;
        baseline|mrasp) train_system "$step"; evaluate "$step" ;;
        *) echo "unknown step $step (prepare train evaluate baseline mrasp all)" >&2; exit 2 ;;
    esac
done
