#!/usr/bin/env bash
# Tokenise a raw parallel corpus with each side's own BERT WordPiece vocabulary and binarise it
# so that fairseq token ids ARE the BERTs' ids (index i = line i of the BERT's vocab.txt).
#
# Usage: bert_binarize.sh RAW_DIR PAIR_PREFIX SRC TGT SRC_BERT TGT_BERT OUTDIR [TASK]
#   RAW_DIR/{train,valid,test}.PAIR_PREFIX.{SRC,TGT} are raw text (e.g. from prepare_gettext.sh:
#   bert_binarize.sh data/gettext en-de de en bert-base-german-cased bert-base-uncased data/bin)
#   TASK: translation_bert (default) or translation_abnet; both read the same binaries.
# Env: PYTHON (default: the repo's .venv), MAX_TOKENS (WordPiece cap per sentence, default 250)
set -euo pipefail
[ "$#" -ge 7 ] || { sed -n 2,10p "$0" >&2; exit 2; }
raw="$1"; pair="$2"; src="$3"; tgt="$4"; src_bert="$5"; tgt_bert="$6"; out="$7"; task="${8:-translation_bert}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
bin="$(dirname "$python")"
mkdir -p "$out/tok"

for split in train valid test; do
    [ -f "$raw/$split.$pair.$src" ] || continue
    "$python" "$repo/examples/data/bert_tokenize.py" --bert "$src_bert" --max-tokens "${MAX_TOKENS:-250}" \
        "$raw/$split.$pair.$src" "$out/tok/$split.$src" &
    pid=$!
    "$python" "$repo/examples/data/bert_tokenize.py" --bert "$tgt_bert" --max-tokens "${MAX_TOKENS:-250}" \
        "$raw/$split.$pair.$tgt" "$out/tok/$split.$tgt"
    wait "$pid"
done
"$python" "$repo/examples/data/bert_dict.py" --bert "$src_bert" "$out/tok/bert_dict.$src.txt"
"$python" "$repo/examples/data/bert_dict.py" --bert "$tgt_bert" "$out/tok/bert_dict.$tgt.txt"

splits=(--trainpref "$out/tok/train")
[ -f "$out/tok/valid.$src" ] && splits+=(--validpref "$out/tok/valid")
[ -f "$out/tok/test.$src" ] && splits+=(--testpref "$out/tok/test")
"$bin/fairseq-preprocess" --user-dir "$repo/ptnmt_fairseq" --task "$task" \
    --source-lang "$src" --target-lang "$tgt" "${splits[@]}" \
    --srcdict "$out/tok/bert_dict.$src.txt" --tgtdict "$out/tok/bert_dict.$tgt.txt" \
    --destdir "$out" --workers 2 2>&1 | grep -E "replaced|Wrote" || true
[ -f "$out/train.$src-$tgt.$src.bin" ] || { echo "bert_binarize.sh: fairseq-preprocess failed" >&2; exit 1; }
