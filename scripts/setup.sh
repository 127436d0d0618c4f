#!/usr/bin/env bash
# Set up everything ptnmt_fairseq needs, idempotently: a virtual environment at .venv with the
# pinned stack (torch/torchaudio 2.9.1, ve-fairseq 0.12.3), the package itself (editable), and the
# Debian packages the data scripts use (espeak-ng, FreeDict dictionaries).
# Usage: bash scripts/setup.sh        (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "setup.sh: $PYTHON is not Python 3.11 (fairseq 0.12 is tested here on 3.11 only)" >&2
    exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q -c requirements/constraints.txt)

# The torch pair first and alone, so that no later package can pull another torch build.
"${PIP[@]}" torch==2.9.1 torchaudio==2.9.1
"${PIP[@]}" -r requirements/base.txt
"${PIP[@]}" --no-deps -e .
.venv/bin/python - <<'PY'
import torch, torchaudio, fairseq
assert torch.__version__.split("+")[0] == "2.9.1", torch.__version__
assert torchaudio.__version__.split("+")[0] == "2.9.1", torchaudio.__version__
print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}, fairseq {fairseq.__version__}")
PY

# Debian packages: espeak-ng synthesises speech; FreeDict gives bilingual word lists.
APT_PACKAGES=(espeak-ng dict-freedict-deu-eng dict-freedict-eng-deu dict-freedict-eng-fra dict-freedict-fra-eng)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup.sh: installing ${missing[*]}"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "setup.sh: please install with apt-get: ${missing[*]} (speech/dictionary tests skip)" >&2
    fi
fi
