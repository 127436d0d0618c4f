#!/usr/bin/env bash
# Pre-train one small BERT with a masked-LM head per language on the monolingual side of the
# offline gettext corpora (pretrain_bert.py: HF BertForMaskedLM, its WordPiece trainer and MLM
# data collator), for the methods that need an MLM-pretrained BERT (AB-Net's decoder, C-MLM's
# teacher, CTNMT), where all-MiniLM-L6-v2 is a sentence-embedding model without an MLM head.
#
# Usage: pretrain_bert.sh GETTEXT_DIR OUTDIR LANG [LANG...]
#   e.g. pretrain_bert.sh data/gettext data/bert de en
# GETTEXT_DIR is prepare_gettext.sh's output. The text of LANG is the LANG side of its
# train.en-LANG file (for en: the English side of every train.en-* pair), each sentence once,
# so no valid or test sentence is seen. Writes OUTDIR/LANG/ (config.json, weights, vocab.txt,
# tokenizer files: pass it as --source-bert / --target-bert) and OUTDIR/LANG/train.log.
# Environment (CPU-sized defaults; each is a pretrain_bert.py option):
#   PYTHON=...       interpreter with transformers and torch (default: python3)
#   VOCAB_SIZE=8000 LAYERS=4 HIDDEN=256 HEADS=4 INTERMEDIATE=1024 MAX_LENGTH=64
#   STEPS=2000 MINUTES=M (stop after M minutes of training) BATCH_SIZE=64 LR=5e-4 SEED=1
#   LOWERCASE=1      an uncased BERT
set -euo pipefail

if [ "$#" -lt 3 ]; then
    awk 'NR > 1 { if (/^#/) print; else exit }' "$0" >&2
    exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
gettext="$1" outdir="$2"
shift 2
for lang in "$@"; do
    mkdir -p "$outdir/$lang"
    text="$outdir/$lang/train.txt"
    if [ "$lang" = en ]; then sources=("$gettext"/train.en-*.en); else sources=("$gettext/train.en-$lang.$lang"); fi
    if [ ! -s "${sources[0]}" ]; then
        echo "pretrain_bert.sh: no $lang training text in $gettext (${sources[0]})" >&2
        exit 1
    fi
    awk '!seen[$0]++' "${sources[@]}" > "$text"  # each sentence once
    options=(--vocab-size "${VOCAB_SIZE:-8000}" --layers "${LAYERS:-4}" --hidden "${HIDDEN:-256}"
             --heads "${HEADS:-4}" --intermediate "${INTERMEDIATE:-1024}"
             --max-length "${MAX_LENGTH:-64}" --steps "${STEPS:-2000}"
             --batch-size "${BATCH_SIZE:-64}" --lr "${LR:-5e-4}" --seed "${SEED:-1}")
    [ -n "${MINUTES:-}" ] && options+=(--minutes "$MINUTES")
    [ "${LOWERCASE:-0}" = 1 ] && options+=(--lowercase)
    echo "== $lang: $(wc -l < "$text") sentences -> $outdir/$lang"
    rm -f "$outdir/$lang/config.json"  # success below means this run wrote it
    "${PYTHON:-python3}" "$here/pretrain_bert.py" "$text" --out "$outdir/$lang" "${options[@]}" \
        | tee "$outdir/$lang/train.log" | grep -E "sentences|done" || true
    [ -f "$outdir/$lang/config.json" ] || { echo "pretrain_bert.sh: $lang failed (see $outdir/$lang/train.log)" >&2; exit 1; }
done
