#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the quickstart recipe; prints the BLEU of what it trained.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec bash recipes/quickstart/run.sh "$@"
