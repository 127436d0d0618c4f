#!/usr/bin/env bash
# MASS (Song et al., ICML 2019) and CSP (Yang et al., EMNLP 2020) on gettext en<->de (CPU):
# pre-train one en+de model on monolingual text with MASS (and one with CSP), then fine-tune it
# on low-resource parallel subsets, and without any parallel data by back-translation; every
# fine-tuning is compared with the same training from random initialisation.
#
# Usage: recipes/mass/run.sh WORKDIR [STEP...]
#   STEP: prepare   gettext en-de (prepare_gettext.sh), both directions + joint sentencepiece +
#                   dict.txt with LANG_TOK_EN/DE (prepare_multilingual.py; the task adds <mask>),
#                   FreeDict en-de/de-en word dictionaries (CSP's lexicon), and the monolingual
#                   text: train.mono.en = the English of the first half of the training pairs,
#                   train.mono.de = the German of the second half (no sentence has its
#                   translation on the other side), valid.mono.* = the valid pairs' sides; and
#                   train<N>.en-de.* = the first N training pairs for each N in LOWRES
#         pretrain  MASS on train.mono.{en,de} -> WORKDIR/mass (span ratio SPAN_RATIO, decoder
#                   input DECODER_INPUT: span, the paper's trick, or masked / feed)
#         csp       CSP on the same text with the FreeDict lexicon -> WORKDIR/csp, with as many
#                   updates as WORKDIR/mass reached (the anchor's pitfall 8: equal steps)
#         lowres    for each N in LOWRES: FINETUNE_PAIR on train<N> from scratch, from mass and
#                   from csp (those pre-trained) -> WORKDIR/ft_{scratch,mass,csp}_<N>
#         baseline  FINETUNE_PAIR on all training pairs from scratch -> WORKDIR/full_scratch
#         supervised  FINETUNE_PAIR on all training pairs from mass -> WORKDIR/full_mass
#         unsup     unsupervised fine-tuning of mass by on-the-fly back-translation of
#                   train.mono.{en,de} (no parallel text; valid pairs for checkpoint selection)
#                   -> WORKDIR/unsup_mass
#         trick     pre-training throughput with and without the span-only decoder: MAX_UPDATE_WPS
#                   (default 60) MASS updates with --decoder-input span, then masked (the whole
#                   length, [M] outside the span; the same loss), into WORKDIR/wps_{span,masked};
#                   prints each run's median training words/s (span tokens per second, fairseq's
#                   wps: the same count in both)
#         evaluate  decode every model above that exists on FINETUNE_PAIR; unsup_mass, and mass
#                   itself (MASS without back-translation), on en-de and de-en
#         all       prepare pretrain csp lowres baseline supervised unsup trick evaluate
#   default: prepare pretrain lowres evaluate
# Fine-tuning loads weights only (--finetune-from-model: fresh optimizer and schedule, no
# masking). Training appends to WORKDIR/<model>/train.log and resumes from checkpoint_last.pt.
# Decoding: fairseq-generate --task mass -s SRC -t TGT on the first MAX_EVAL test lines, beam
# BEAM; BLEU is case-sensitive sacreBLEU (13a) of the detokenised D- lines against the raw
# target text of those lines (never fairseq's T- lines).
#
# Environment (CPU-sized defaults):
#   LOWRES="1000 5000"        low-resource sizes (the paper: 10k and 100k WMT pairs)
#   FINETUNE_PAIR=en-de       the supervised direction
#   SPAN_RATIO=0.5  DECODER_INPUT=span  CSP_TOP_K=3
#   MAX_TRAIN=N  VOCAB_SIZE=N (default 8000)  MAX_TOKENS=N (default 2048)  MAX_EVAL=N (default
#                100; all: the whole test split)  BEAM=N (default 5)  VALID_STEPS=N (default 10)
#   ARCH_ARGS="..."           model (default: --arch mass_tiny, 3+3 pre-norm layers, d256)
#   MAX_UPDATE_PRE, MAX_UPDATE_FT, MAX_UPDATE_BT   updates (default 600, 300, 200)
#   MINUTES_PRE, MINUTES_FT, MINUTES_BT            wall-clock budgets instead (whichever ends first);
#                             csp runs the updates mass reached, with no time limit unless
#                             MINUTES_CSP is given (its steps cost more: code-switching, longer
#                             sources)
#   LR_PRE, LR_FT             peak learning rates (default 2e-3, 1e-3; inverse_sqrt), WARMUP_PRE,
#                             WARMUP_FT (a tenth of the updates); LR_BT back-translation's
#                             constant rate (default 1e-4, the paper's)
#   TRAIN_EXTRA, GEN_EXTRA    extra fairseq-train / fairseq-generate options (word-split)
#
# Paper settings (GPUs):
#   MASS (Sec. 4.1; microsoft/MASS MASS-unsupNMT): WMT News Crawl (190M en, 62M fr, 270M de
#   sentences), joint BPE 60k, --arch mass_base (6+6, d1024, FFN 4096, 8 heads, GELU), span 50%,
#   Adam lr 1e-4, 3000 tokens x 8 V100; unsupervised fine-tuning by back-translation only, Adam
#   lr 1e-4, 2000 tokens per GPU; low-resource: 10k/100k/1M pairs, 20k steps at lr 1e-4. e.g.
#     ARCH_ARGS="--arch mass_base" VOCAB_SIZE=60000 MAX_TOKENS=3000 LR_PRE=1e-4 LR_FT=1e-4
#     MAX_UPDATE_FT=20000 LR_BT=1e-4   (the paper's back-translation batches: 2000 tokens)
#   Reported (Table 2, newstest2016 en-de / de-en, multi-bleu): unsupervised 28.3 / 35.2.
#   CSP (Sec. 4): News Crawl 50M each, joint BPE 32k, lower-cased, a vecmap lexicon (top 3);
#   --arch csp_unsupervised (4+4) or csp_base (6+6), Adam lr 5e-4; unsupervised en-de / de-en
#   28.7 / 35.7 against reproduced MASS 27.9 / 34.7; supervised WMT14 en-de 28.9 (MASS 28.4).
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
set_workdir "$@"; shift
data="$work/data"; dicts="$work/dict"
export DECODE_TASK=mass
pair="${FINETUNE_PAIR:-en-de}"
read -r -a lowres <<< "${LOWRES:-1000 5000}"
max_eval="${MAX_EVAL:-100}"
max_update_pre="${MAX_UPDATE_PRE:-600}"; max_update_ft="${MAX_UPDATE_FT:-300}"
max_update_bt="${MAX_UPDATE_BT:-200}"
warmup_pre="${WARMUP_PRE:-$(tenth_of "$max_update_pre")}"
warmup_ft="${WARMUP_FT:-$(tenth_of "$max_update_ft")}"
ARCH_ARGS="${ARCH_ARGS:---arch mass_tiny}"
export VOCAB_SIZE="${VOCAB_SIZE:-8000}" MAX_TOKENS="${MAX_TOKENS:-2048}" ARCH_ARGS

mass_train() {  # SAVE_DIR OPTIONS...: train_multilingual with the mass task and its criterion
    train_multilingual mass "$@" --criterion label_smoothed_cross_entropy
}

pretrain() {  # MODEL UPDATES MINUTES OPTIONS...: MASS-style pre-training of en+de into $work/MODEL
    local model="$1" updates="$2" minutes="$3"
    shift 3
    # shellcheck disable=SC2046
    mass_train "$work/$model" "$data" --mono-langs en,de --span-ratio "${SPAN_RATIO:-0.5}" \
        --decoder-input "${DECODER_INPUT:-span}" --lr "${LR_PRE:-2e-3}" \
        --warmup-updates "$warmup_pre" $(budget_options "$updates" "$minutes") "$@"
}

updates_of() {  # MODEL_DIR: the updates its checkpoint_last.pt reached
    "$python" -c "import sys, torch; print(torch.load(sys.argv[1], map_location='cpu', weights_only=False)['optimizer_history'][-1]['num_updates'])" "$1/checkpoint_last.pt"
}

finetune() {  # SAVE_DIR SUBSET INIT: $pair on the SUBSET pairs, from $work/INIT (scratch: none)
    local save="$1" subset="$2" init="$3" from=()
    if [ "$init" != scratch ]; then
        [ -f "$work/$init/checkpoint_best.pt" ] || die "no $work/$init/checkpoint_best.pt: run its step first"
        from=(--finetune-from-model "$work/$init/checkpoint_best.pt")
    fi
    echo "-- $(basename "$save"): $pair on $subset from $init"
    # shellcheck disable=SC2046
    mass_train "$save" "$data" --lang-pairs "$pair" --train-subset "$subset" --lr "${LR_FT:-1e-3}" \
        --warmup-updates "$warmup_ft" $(budget_options "$max_update_ft" "${MINUTES_FT:-}") "${from[@]}"
}

pretrained() {  # the pre-trained models present (mass, csp)
    local model
    for model in mass csp; do [ -f "$work/$model/checkpoint_best.pt" ] && echo "$model"; done
    return 0
}

step_prepare() {
    prepare_multilingual "$work/raw" "$data" "$dicts" de
    local n half
    n="$(wc -l < "$data/train.en-de.en")"; half=$((n / 2))
    head -n "$half" "$data/train.en-de.en" > "$data/train.mono.en"
    tail -n +"$((half + 1))" "$data/train.en-de.de" > "$data/train.mono.de"
    cp "$data/valid.en-de.en" "$data/valid.mono.en"; cp "$data/valid.en-de.de" "$data/valid.mono.de"
    for size in "${lowres[@]}"; do
        for lang in en de; do
            head -n "$size" "$data/train.en-de.$lang" > "$data/train$size.en-de.$lang"
            head -n "$size" "$data/train.de-en.$lang" > "$data/train$size.de-en.$lang"
        done
    done
    echo "monolingual: $(wc -l < "$data/train.mono.en") en, $(wc -l < "$data/train.mono.de") de sentences"
}
step_pretrain() { echo "-- mass"; pretrain mass "$max_update_pre" "${MINUTES_PRE:-}"; }
step_csp() {
    local updates="$max_update_pre"
    [ -f "$work/mass/checkpoint_last.pt" ] && updates="$(updates_of "$work/mass")"
    echo "-- csp: $updates updates (as mass)"
    pretrain csp "$updates" "${MINUTES_CSP:-}" --mono-objective csp --ras-dicts "$dicts/en-de.txt,$dicts/de-en.txt" \
        --csp-top-k "${CSP_TOP_K:-3}"
}
step_lowres() {
    local size init
    for size in "${lowres[@]}"; do
        for init in scratch $(pretrained); do finetune "$work/ft_${init}_$size" "train$size" "$init"; done
    done
}
step_baseline() { finetune "$work/full_scratch" train scratch; }
step_supervised() { finetune "$work/full_mass" train mass; }
step_trick() {
    local mode
    for mode in span masked; do
        echo "-- wps_$mode: --decoder-input $mode"
        DECODER_INPUT="$mode" pretrain "wps_$mode" "${MAX_UPDATE_WPS:-60}" "" --log-interval 10 \
            --max-valid-steps 1
        echo "wps_$mode: median $(grep -oE "wps=[0-9.]+" "$work/wps_$mode/train.log" | cut -d= -f2 \
            | "$python" -c "import statistics, sys; print(statistics.median(map(float, sys.stdin)))") words/s"
    done
}
step_unsup() {
    [ -f "$work/mass/checkpoint_best.pt" ] || die "no $work/mass/checkpoint_best.pt: run pretrain first"
    echo "-- unsup_mass: back-translation of train.mono.{en,de}"
    # shellcheck disable=SC2046
    mass_train "$work/unsup_mass" "$data" --mono-langs en,de --mono-objective back_translation \
        --lang-pairs en-de,de-en --lr "${LR_BT:-1e-4}" --lr-scheduler fixed --warmup-updates 0 \
        $(budget_options "$max_update_bt" "${MINUTES_BT:-}") \
        --finetune-from-model "$work/mass/checkpoint_best.pt"
}
step_evaluate() {
    local model
    for model in "$work"/ft_* "$work"/full_*; do
        [ -f "$model/checkpoint_best.pt" ] && decode_multilingual "$data" "$model" "$pair" "$max_eval"
    done
    if [ -f "$work/unsup_mass/checkpoint_best.pt" ]; then
        for model in mass unsup_mass; do
            decode_multilingual "$data" "$work/$model" en-de "$max_eval"
            decode_multilingual "$data" "$work/$model" de-en "$max_eval"
        done
    fi
    return 0
}

run_steps "prepare pretrain lowres evaluate" "prepare pretrain csp lowres baseline supervised unsup trick evaluate" "$@"
