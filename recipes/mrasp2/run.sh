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
# Validation runs at each epoch's end and when the budget ends (once, for budgets below an
# epoch), on at most VALID_STEPS batches. With MAX_EVAL=all the subset is test (test.<src>-<tgt>.gen)
# and with AVERAGE=N the decoded checkpoint is checkpoint_avg.pt. BLEU is case-sensitive sacreBLEU (13a) of the detokenised D- lines against the raw
# target text of the decoded lines, WORKDIR/data/t<MAX_EVAL>.<src>-<tgt>.<tgt> (never fairseq's
# T- lines, rebuilt from ids); the target language token is the decoder's first input, never
# --prefix-size.
# Retrieval: python -m ptnmt_fairseq.mrasp2.retrieval (masked mean of the encoder states, cosine,
# top-1, mean over ordered pairs), written to WORKDIR/<system>/retrieval.json.
#
# Environment (CPU-sized defaults):
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
#   MINUTES=M                     a wall-clock budget per system instead (whichever of MAX_UPDATE
#                                 and MINUTES ends first): mRASP2 costs more per update
#   AVERAGE=N  SAVE_INTERVAL=K    decode the average of the N newest checkpoints, one saved every
#                                 K updates (default 100)
#   MAX_EVAL=all                  decode whole test splits
#   VALID_STEPS=N                 validation batches (default 10)
#   BEAM=N                        beam size (default 5)
#   TRAIN_EXTRA, GEN_EXTRA        extra fairseq-train / fairseq-generate options (word-split)
# Models this small and this short translate mostly in repetitions; retrieval is the clear
# signal. benchmarks/mrasp.py is the controlled comparison of the three systems; measured runs
# are in the README and benchmarks/results/mrasp.json.
#
# Paper settings (Pan et al., ACL 2021; PANXiao1994/mRASP2: the 12e12d model and optimiser from
# examples/configs/parallel_mono_12e12d_contrastive.yml on branch master, the contrastive loss
# from mcolt/criterions/label_smoothed_cross_entropy_with_contrastive.py, online AA from branch
# new_impl, scores from README.md), on PC32 + news-crawl mono, 32 V100:
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
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
set_workdir "$@"; shift
data="$work/data"; dicts="$work/dict"
read -r -a langs <<< "${LANGS:-de fr}"
train_pairs="${TRAIN_PAIRS:-en-de,de-en,en-fr,fr-en}"
mono_langs="${MONO_LANGS:-de,fr}"
read -r -a supervised <<< "${SUPERVISED:-en-de de-en en-fr fr-en}"
read -r -a zeroshot <<< "${ZEROSHOT:-de-fr fr-de}"
read -r -a retrieval_langs <<< "${RETRIEVAL_LANGS:-en de fr}"
max_eval="${MAX_EVAL:-100}"
max_update="${MAX_UPDATE:-600}"
warmup="${WARMUP:-$(tenth_of "$max_update")}"

copy_mono_text() {  # the non-English side of each en-<MONO_LANGS> training pair, as AA mono text
    local lang
    for lang in ${mono_langs//,/ }; do
        [ -f "$data/train.mono.$lang" ] || cp "$data/train.en-$lang.$lang" "$data/train.mono.$lang"
    done
}

train_system() {  # SYSTEM: fairseq-train into $work/SYSTEM
    local system="$1" task=translation_multi_langtok args
    case "$system" in
        mrasp2)   task=translation_multi_langtok_aa  # + aligned augmentation
                  args=(--ras-dicts "$(comma_list "$dicts"/*.txt)" --ras-prob "${RAS_PROB:-0.3}" --mono-langs "$mono_langs"
                        --aa-prob "${AA_PROB:-0.9}" --criterion label_smoothed_cross_entropy_with_contrastive
                        --contrastive-lambda "${LAMBDA:-1.0}" --temperature "${TAU:-0.1}") ;;
        mrasp)    args=(--ras-dicts "$(comma_list "$dicts"/*.txt)" --ras-prob "${RAS_PROB:-0.3}" --criterion label_smoothed_cross_entropy) ;;
        baseline) args=(--criterion label_smoothed_cross_entropy) ;;
        *) die "unknown system $system" ;;
    esac
    # shellcheck disable=SC2046
    train_multilingual "$task" "$work/$system" "$data" --lang-pairs "$train_pairs" "${args[@]}" \
        --lr "${LR:-1e-3}" --warmup-updates "$warmup" $(budget_options "$max_update" "${MINUTES:-}")
}

evaluate() {  # SYSTEM: supervised and zero-shot BLEU, retrieval accuracy
    local system="$1" dir checkpoint
    [ -f "$work/$system/checkpoint_best.pt" ] || die "$system: no checkpoint, train it first"
    checkpoint="$(decoded_checkpoint "$work/$system")"
    for dir in "${supervised[@]}"; do decode_multilingual "$data" "$work/$system" "$dir" "$max_eval"; done
    for dir in "${zeroshot[@]}"; do decode_multilingual "$data" "$work/$system" "$dir" "$max_eval" " (zero-shot)"; done
    "$python" -m ptnmt_fairseq.mrasp2.retrieval "$data" --path "$checkpoint" \
        --langs "${retrieval_langs[@]}" > "$work/$system/retrieval.json" 2> "$work/$system/retrieval.log" \
        || die "$system: retrieval failed (see $work/$system/retrieval.log)"
    echo "$system retrieval: $(cat "$work/$system/retrieval.json")"
}

step_prepare() {
    prepare_multilingual "$work/raw" "$data" "$dicts" "${langs[@]}"
    copy_mono_text
    echo "multi-way test: $(wc -l < "$data/test.multiway.en") sentences; dictionaries: $(line_counts "$dicts")"
}
step_train() { train_system mrasp2; }
step_evaluate() { evaluate mrasp2; }
step_baseline() { train_system baseline; evaluate baseline; }
step_mrasp() { train_system mrasp; evaluate mrasp; }

cd "$repo"  # python -m ptnmt_fairseq.mrasp2.retrieval imports the plugin from the repository
run_steps "prepare train evaluate" "prepare train evaluate baseline mrasp" "$@"
