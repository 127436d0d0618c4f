#!/usr/bin/env bash
# Convert FreeDict bilingual dictionaries to MUSE-style word-pair files
# (see freedict_to_pairs.py for the format and the filters).
#
# Usage: prepare_freedict.sh OUTDIR PAIR [PAIR...]
#   e.g. prepare_freedict.sh data/dict deu-eng eng-fra
#        -> data/dict/de-en.txt data/dict/en-fr.txt
# A missing dictionary is installed with apt-get (package
# dict-freedict-PAIR) when running as root; otherwise the script stops and
# names the package to install.
# Environment:
#   DICT_DIR=D   read dictionaries from D instead of /usr/share/dictd
#   PYTHON=...   interpreter (default: python3; only the stdlib is needed)
set -euo pipefail

if [ "$#" -lt 2 ]; then
    echo "usage: $0 OUTDIR PAIR [PAIR...]   (PAIR like deu-eng)" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dict_dir="${DICT_DIR:-/usr/share/dictd}"
outdir="$1"
shift

missing=()
for pair in "$@"; do
    if [ ! -f "$dict_dir/freedict-$pair.index" ] || [ ! -f "$dict_dir/freedict-$pair.dict.dz" ]; then
        missing+=("dict-freedict-$pair")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    # apt-get only installs into the system directory, and only as root.
    if [ "$(id -u)" -ne 0 ] || [ "$dict_dir" != /usr/share/dictd ]; then
        echo "error: missing dictionaries in $dict_dir; install: apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be stale or absent (fresh containers): refresh once.
    if ! apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
        apt-get update >&2
        apt-get install -y --no-install-recommends "${missing[@]}" >&2 || {
            echo "error: could not install ${missing[*]} (see 'apt-cache search freedict' for the pairs available)" >&2
            exit 1
        }
    fi
fi

exec "${PYTHON:-python3}" "$here/freedict_to_pairs.py" "$outdir" "$@" --dict-dir "$dict_dir"
