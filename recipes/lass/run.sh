#!/usr/bin/env bash
# LaSS pipeline (Lin et al., ACL 2021) on gettext en<->ro (low), en<->de (medium), en<->fr (rich),
# CPU: multilingual baseline -> fine-tune each direction alone -> magnitude-prune each weight
# matrix to a per-direction mask -> train the baseline on with the masks (one direction per batch)
# -> evaluate every direction and the zero-shot ones; `baseline` trains the baseline on densely
# for the same budget (the comparison); `newpair` adds en<->NEW_LANG as new sub-networks while the
# existing directions stay bit-identical, and beside it plain fine-tuning on the new pair.
#
# Usage: recipes/lass/run.sh WORKDIR [STEP...]
#   STEP: prepare   gettext corpus for LANGS and NEW_LANG (prepare_gettext.sh), training pairs
#                   capped per language (TRAIN_SIZES), both directions + zero-shot test sets +
#                   joint sentencepiece + dict.txt with LANG_TOK_XX (prepare_multilingual.py)
#         base      the multilingual Transformer on PAIRS (temperature sampling T=2) -> WORKDIR/base
#         finetune  each PAIRS direction alone from base (dense) -> WORKDIR/ft.<src>-<tgt>
#         masks     python -m ptnmt_fairseq.lass.find_masks --alpha ALPHA: one mask per direction
#                   from its fine-tuned checkpoint -> WORKDIR/masks/<src>-<tgt>.mask.npz
#         lass      transformer_lass from base/checkpoint_best.pt with the masks (--task
#                   translation_lass, fresh optimizer) -> WORKDIR/lass
#         baseline  base trained on densely with the LaSS budget -> WORKDIR/base_cont
#         evaluate  decode PAIRS and ZERO_SHOT with base_cont and lass (first MAX_EVAL test lines;
#                   zero-shot X-Y with the encoder mask of X-en and the decoder mask of en-Y)
#         analyze   python -m ptnmt_fairseq.lass.analyze: mask IoU between directions and the
#                   language-specific fraction per layer and module -> WORKDIR/analysis/
#         newpair   en-NEW_LANG, NEW_LANG-en: fine-tune lass densely on them (mask finding), masks,
#                   then train only their sub-networks outside the PAIRS masks
#                   (--lass-protected-pairs) -> WORKDIR/lass_new; plain dense fine-tuning of
#                   base_cont on the new pair with the same budget -> WORKDIR/plain_new; decode
#                   PAIRS and the new pair with both (forgetting)
#         all       prepare base finetune masks lass baseline evaluate analyze newpair
#   default: all
# Training appends to WORKDIR/<model>/train.log (fairseq-train resumes from checkpoint_last.pt).
# BLEU: case-sensitive sacreBLEU (13a) of the detokenised D- lines against the raw target text of
# the decoded lines, WORKDIR/data/t<MAX_EVAL>.<src>-<tgt>.<tgt> (never fairseq's T- lines).
#
# Environment (CPU-sized defaults):
#   LANGS="ro de fr"            the languages of PAIRS (en<->each)
#   TRAIN_SIZES="ro=3000 de=10000"   training pairs kept per language (the rest: all; gettext has
#                               about ro 11.3k, de 23.7k, fr 27.7k): low, medium, rich
#   NEW_LANG=nl                 the language of the new pair (in the vocabulary from the start)
#   ZERO_SHOT="de-fr fr-de"     zero-shot directions decoded (from the multi-way test set)
#   ALPHA=0.3                   fraction of each weight matrix pruned per direction
#   SHARED_OUTPUT_PROJECTION=1  leave the output projection dense (default: masked per direction)
#   VOCAB_SIZE=N                joint sentencepiece size (default 4000)
#   ARCH_ARGS="..."             model (default: transformer 2+2 layers, d128, FFN 512, 4 heads,
#                               shared embeddings)
#   LASS_ARCH=transformer_lass  the LaSS preset (transformer_lass_iwslt_de_en: the paper's IWSLT)
#   MAX_UPDATE_BASE, MAX_UPDATE_FT, MAX_UPDATE_LASS, MAX_UPDATE_NEW   updates (default 600, 100,
#                               300, 200); MINUTES_BASE, MINUTES_FT, MINUTES_LASS, MINUTES_NEW:
#                               wall-clock budgets instead (whichever ends first)
#   LR_BASE, LR_FT, LR_LASS     peak learning rates (default 1e-3, 5e-4, 5e-4; the new pair: LR_LASS);
#                               warm-up a tenth of the updates (WARMUP_BASE, _FT, _LASS, _NEW)
#   MAX_TOKENS=N  VALID_STEPS=N  MAX_EVAL=N (default 2000, 10, 100; MAX_EVAL=all: whole splits)
#   BEAM=N  TRAIN_EXTRA  GEN_EXTRA
#   BASE_EXTRA                  extra fairseq-train options of the dense base and the fine-tunings
#                               only (e.g. --bf16); the masked stages train in fp32 (their masked
#                               update restores fp32 weights) and base_cont and plain_new with them
#
# Paper settings (Lin et al., ACL 2021; NLP-Playground/LaSS: configs/iwslt/*.yml, toolbox/
# generate_mask.py), GPUs: IWSLT fa he pl it ar es de nl <-> en (16 directions),
# transformer_iwslt_de_en (6+6, d512, FFN 1024, 4 heads), shared decoder input/output embeddings,
# encoder_langtok src + decoder_langtok, temperature sampling T=2, Adam lr 5e-4, inverse_sqrt
# warmup 4k, dropout 0.1, weight decay 0, 16384 tokens x 4 GPUs x update_freq 4, 160k updates;
# per-direction fine-tuning with dropout 0.3, optimizer, lr and dataloader reset, saved every 500
# updates; masks by per-tensor magnitude with alpha swept (not fixed in the repo); the mask stage
# restores the baseline's best checkpoint with a fresh optimizer (seed 23). WMT: Transformer
# base/big, spm 64k. Reported: up to +1.2 BLEU on 36 pairs, zero-shot +8.3 average on 30 pairs.
#   e.g. ARCH_ARGS="--arch transformer_iwslt_de_en --share-decoder-input-output-embed"
#     LASS_ARCH=transformer_lass_iwslt_de_en VOCAB_SIZE=... (IWSLT: the authors' shared dictionary)
#     MAX_TOKENS=16384 LR_BASE=5e-4 WARMUP_BASE=4000 MAX_UPDATE_BASE=160000
#     TRAIN_EXTRA="--dropout 0.1 --weight-decay 0.0"
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
set_workdir "$@"; shift
data="$work/data"
read -r -a langs <<< "${LANGS:-ro de fr}"
new_lang="${NEW_LANG:-nl}"
read -r -a zero_shot <<< "${ZERO_SHOT:-de-fr fr-de}"
max_eval="${MAX_EVAL:-100}"
max_update_base="${MAX_UPDATE_BASE:-600}"; max_update_ft="${MAX_UPDATE_FT:-100}"
max_update_lass="${MAX_UPDATE_LASS:-300}"; max_update_new="${MAX_UPDATE_NEW:-200}"
warmup_lass="${WARMUP_LASS:-$(tenth_of "$max_update_lass")}"
warmup_new="${WARMUP_NEW:-$(tenth_of "$max_update_new")}"
# the LaSS model: the same shapes as ARCH_ARGS (given last, --arch transformer_lass wins)
lass_model=(--arch "${LASS_ARCH:-transformer_lass}" --lass-mask-dir "$work/masks")
mask_options=()
if [ -n "${SHARED_OUTPUT_PROJECTION:-}" ]; then
    lass_model+=(--lass-shared-output-projection); mask_options+=(--shared-output-projection)
fi

directions_of() {  # LANG...: en-L L-en for each L, space-separated
    local lang
    for lang in "$@"; do echo -n "en-$lang $lang-en "; done
}
read -r -a pairs <<< "$(directions_of "${langs[@]}")"
read -r -a new_pairs <<< "$(directions_of "$new_lang")"

train() {  # TASK SAVE_DIR DIRECTIONS UPDATES MINUTES LR WARMUP OPTIONS...: train_multilingual
           # (ARCH_ARGS); translation_lass trains the LaSS model with the masks
    local task="$1" save="$2" directions="$3" updates="$4" minutes="$5" lr="$6" warmup="$7"
    shift 7
    if [ "$task" = translation_lass ]; then set -- "$@" "${lass_model[@]}"; fi
    # shellcheck disable=SC2046
    train_multilingual "$task" "$save" "$data" --criterion label_smoothed_cross_entropy \
        --lang-pairs "$directions" --lr "$lr" --warmup-updates "$warmup" \
        $(budget_options "$updates" "$minutes") "$@"
}

decode_all() {  # MODEL DIRECTION...: decode and score each direction with WORKDIR/MODEL
    local d
    for d in "${@:2}"; do decode_multilingual "$data" "$work/$1" "$d" "$max_eval"; done
}

step_prepare() {
    local lang size
    prepare_gettext "$work/gettext" "${langs[@]}" "$new_lang"
    if [ ! -f "$data/dict.txt" ]; then
        mkdir -p "$work/raw"
        cp "$work/gettext"/{valid,test}.* "$work/raw/"
        for lang in "${langs[@]}" "$new_lang"; do
            size="$(tr ' ' '\n' <<< "${TRAIN_SIZES:-ro=3000 de=10000}" | sed -n "s/^$lang=//p")"
            for side in en "$lang"; do
                head -n "${size:-100000000}" "$work/gettext/train.en-$lang.$side" > "$work/raw/train.en-$lang.$side"
            done
        done
        "$python" "$repo/examples/data/prepare_multilingual.py" "$work/raw" "$data" \
            --langs "${langs[@]}" "$new_lang" --vocab-size "${VOCAB_SIZE:-4000}"
    fi
    for lang in "${langs[@]}" "$new_lang"; do
        echo "en-$lang: $(wc -l < "$data/train.en-$lang.en") train, $(wc -l < "$data/test.en-$lang.en") test pairs"
    done
}

step_base() {
    echo "-- base: $(comma_list "${pairs[@]}")"
    # shellcheck disable=SC2086
    train translation_multi_langtok "$work/base" "$(comma_list "${pairs[@]}")" "$max_update_base" \
        "${MINUTES_BASE:-}" "${LR_BASE:-1e-3}" "${WARMUP_BASE:-$(tenth_of "$max_update_base")}" \
        ${BASE_EXTRA:-}
}

finetune_directions() {  # FROM_MODEL DIRECTION...: each direction alone, dense, into ft.<direction>
    local from="$work/$1/checkpoint_best.pt" d
    [ -f "$from" ] || die "no $from: run the step that trains $1 first"
    for d in "${@:2}"; do
        echo "-- ft.$d from $1"
        # shellcheck disable=SC2086
        train translation_multi_langtok "$work/ft.$d" "$d" "$max_update_ft" "${MINUTES_FT:-}" \
            "${LR_FT:-5e-4}" "${WARMUP_FT:-$(tenth_of "$max_update_ft")}" --finetune-from-model "$from" \
            ${BASE_EXTRA:-}
    done
}

find_masks() {  # DIRECTION...: the masks of the fine-tuned directions into WORKDIR/masks
    local d specs=()
    for d in "$@"; do specs+=("$d=$work/ft.$d/checkpoint_best.pt"); done
    "$python" -m ptnmt_fairseq.lass.find_masks --alpha "${ALPHA:-0.3}" --out "$work/masks" \
        "${mask_options[@]}" "${specs[@]}"
}

step_finetune() { finetune_directions base "${pairs[@]}"; }
step_masks() { find_masks "${pairs[@]}"; }

step_lass() {
    echo "-- lass: $(comma_list "${pairs[@]}") with the masks of $work/masks"
    train translation_lass "$work/lass" "$(comma_list "${pairs[@]}")" "$max_update_lass" \
        "${MINUTES_LASS:-}" "${LR_LASS:-5e-4}" "$warmup_lass" \
        --finetune-from-model "$work/base/checkpoint_best.pt"
}

step_baseline() {
    echo "-- base_cont: base trained on densely with the LaSS budget"
    train translation_multi_langtok "$work/base_cont" "$(comma_list "${pairs[@]}")" \
        "$max_update_lass" "${MINUTES_LASS:-}" "${LR_LASS:-5e-4}" "$warmup_lass" \
        --finetune-from-model "$work/base/checkpoint_best.pt"
}

step_evaluate() {
    local model
    for model in base_cont lass; do
        [ -f "$work/$model/checkpoint_best.pt" ] || die "no $work/$model: run the $model step first"
        decode_all "$model" "${pairs[@]}" "${zero_shot[@]}"
    done
}

step_analyze() {
    "$python" -m ptnmt_fairseq.lass.analyze "$work/masks" --out "$work/analysis" \
        --directions "$(comma_list "${pairs[@]}")" | tail -n 1
}

step_newpair() {
    local budget=("$max_update_new" "${MINUTES_NEW:-}" "${LR_LASS:-5e-4}" "$warmup_new")
    finetune_directions lass "${new_pairs[@]}"
    find_masks "${new_pairs[@]}"
    echo "-- lass_new: $(comma_list "${new_pairs[@]}") outside the masks of $(comma_list "${pairs[@]}")"
    train translation_lass "$work/lass_new" "$(comma_list "${new_pairs[@]}")" "${budget[@]}" \
        --lass-protected-pairs "$(comma_list "${pairs[@]}")" \
        --finetune-from-model "$work/lass/checkpoint_best.pt"
    echo "-- plain_new: base_cont fine-tuned densely on $(comma_list "${new_pairs[@]}")"
    train translation_multi_langtok "$work/plain_new" "$(comma_list "${new_pairs[@]}")" "${budget[@]}" \
        --finetune-from-model "$work/base_cont/checkpoint_best.pt"
    decode_all lass_new "${pairs[@]}" "${new_pairs[@]}"
    decode_all plain_new "${pairs[@]}" "${new_pairs[@]}"
}

run_steps "prepare base finetune masks lass baseline evaluate analyze newpair" \
    "prepare base finetune masks lass baseline evaluate analyze newpair" "$@"
