#!/usr/bin/env bash
# Build an English-centric parallel corpus from the gettext catalogs under
# /usr/share/locale (see gettext_corpus.py for the format and the filters).
#
# Usage: prepare_gettext.sh OUTDIR LANG [LANG...]
#   e.g. prepare_gettext.sh data/gettext de fr ro
# Environment:
#   MAX_TRAIN=N    cap the training pairs per language (CPU-sized runs)
#   LOCALE_ROOT=D  read catalogs from D instead of /usr/share/locale
#   PYTHON=...     interpreter (default: python3; only the stdlib is needed)
set -euo pipefail

if [ "$#" -lt 2 ]; then
    echo "usage: $0 OUTDIR LANG [LANG...]" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
outdir="$1"
shift

extra_args=()
if [ -n "${MAX_TRAIN:-}" ]; then
    extra_args+=(--max-train "$MAX_TRAIN")
fi
if [ -n "${LOCALE_ROOT:-}" ]; then
    extra_args+=(--locale-root "$LOCALE_ROOT")
fi

exec "${PYTHON:-python3}" "$here/gettext_corpus.py" "$outdir" "$@" "${extra_args[@]}"
