#!/usr/bin/env bash
# Synthesise source speech for the train/valid/test splits of a gettext
# corpus directory (made by prepare_gettext.sh) with espeak-ng.
#
# Usage: synthesize_speech.sh CORPUS_DIR SRC TGT OUTDIR
#   e.g. synthesize_speech.sh data/gettext en de data/st-en-de
#   -> data/st-en-de/{train,valid,test}.tsv and data/st-en-de/wav/*.wav
# Environment:
#   MAX_LINES=N  synthesise only the first N lines of each split
#   VOICE=V      espeak-ng voice (default: SRC)
#   WORKERS=N    espeak-ng processes at once (default: 2)
#   PYTHON=...   interpreter with torch, torchaudio and soundfile
#                (default: python3)
set -euo pipefail

if [ "$#" -ne 4 ]; then
    echo "usage: $0 CORPUS_DIR SRC TGT OUTDIR" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
corpus_dir="$1" src="$2" tgt="$3" outdir="$4"

options=(--workers "${WORKERS:-2}")
if [ -n "${MAX_LINES:-}" ]; then
    options+=(--max-lines "$MAX_LINES")
fi
if [ -n "${VOICE:-}" ]; then
    options+=(--voice "$VOICE")
fi

for split in train valid test; do
    # gettext corpora are named en-XX whichever side is spoken.
    prefix="$corpus_dir/$split.$src-$tgt"
    if [ ! -f "$prefix.$src" ]; then
        prefix="$corpus_dir/$split.$tgt-$src"
    fi
    if [ ! -f "$prefix.$src" ] || [ ! -f "$prefix.$tgt" ]; then
        echo "error: no $split corpus for $src-$tgt in $corpus_dir" \
            "(looked for $split.$src-$tgt.{$src,$tgt} and $split.$tgt-$src.{$src,$tgt})" >&2
        exit 1
    fi
    "${PYTHON:-python3}" "$here/synthesize_speech.py" "$prefix" "$src" "$tgt" "$outdir" \
        --split "$split" "${options[@]}"
done
