#!/usr/bin/env bash
# Self-supervised wav2vec 2.0 pre-training of a *small* model on the audio of a
# speech-translation directory, with fairseq's own
# `fairseq-train --task audio_pretraining --arch wav2vec2` (CPU).
#
# Usage: pretrain_wav2vec2.sh SPEECH_DIR OUTDIR
#   e.g. pretrain_wav2vec2.sh data/st-en-fr data/w2v-en-fr
# SPEECH_DIR holds train.tsv and valid.tsv in fairseq's speech-to-text format
# (id, audio, n_frames, ...; `audio` relative to SPEECH_DIR, 16 kHz mono,
# n_frames = samples), e.g. made by synthesize_speech.sh.
# Writes:
#   OUTDIR/manifest/{train,valid}.tsv   wav2vec manifests (first line: root dir,
#                                       then `relative_path<TAB>num_samples`)
#   OUTDIR/checkpoint_last.pt, OUTDIR/checkpoint_best.pt
#   OUTDIR/train.log                    the fairseq-train log (also on stdout; appended)
# Run again on the same OUTDIR, fairseq-train resumes from checkpoint_last.pt
# (so raise MAX_UPDATE to train on; or pick a fresh OUTDIR).
# Load a checkpoint (importing ptnmt_fairseq first, for torch's weights_only):
#   state = fairseq.checkpoint_utils.load_checkpoint_to_cpu(path)
#   model = Wav2Vec2Model.build_model(state["cfg"]["model"], task=None)
#   model.load_state_dict(state["model"])
# and model.extract_features(wav, padding_mask)["x"] gives B x T' x EMBED_DIM
# frames, one per 320 samples (20 ms); see tests/tiny_wav2vec2.py for T'.
#
# Environment:
#   PYTHON=...          interpreter with fairseq (default: python3); fairseq-train
#                       is taken from beside it, else from PATH
#   MAX_UPDATE=N        updates (default: 200)
#   MAX_TOKENS=N        audio samples per batch (default: 320000 = 20 s)
#   EMBED_DIM=D         transformer width; also the conv feature channels and the
#                       quantised target dim (default: 64)
#   CONV_DIM=C          conv feature extractor channels (default: EMBED_DIM)
#   ENCODER_LAYERS=L    transformer layers (default: 1); FFN_DIM (default:
#                       2*EMBED_DIM), HEADS (default: 2)
#   MASK_LENGTH=M, MASK_PROB=P   span masking (defaults: 5 frames = 100 ms, 0.5)
#   NUM_NEGATIVES=K     distractors per masked frame, drawn from the masked
#                       frames of the same clip (default: 10)
#   MIN_SAMPLE_SIZE, MAX_SAMPLE_SIZE   skip clips shorter than / crop to this
#                       many samples (defaults: 8000 = 0.5 s, 48000 = 3 s)
#   LATENT_TEMP="(START,END,DECAY)"  Gumbel temperature, END <- START*DECAY^updates
#                       (default: (2,0.5,0.995); the real one decays by 0.999995
#                       over 400k updates, which would keep it at 2 here)
#   LR (default: 0.002), WARMUP (default: MAX_UPDATE/10), SEED (default: 1),
#   LOG_INTERVAL (default: 10)
#   EXTRA="..."         further fairseq-train arguments, appended; word-split, so
#                       no spaces inside a value: EXTRA="--loss-weights [0.1,5]"
#
# Model (EMBED_DIM=64: 0.13 M parameters): conv feature extractor
#   [(C,10,5)] + [(C,3,2)]*4 + [(C,2,2)]*2 (total stride 320, receptive field
#   400 samples, like the real one), L transformer layers, convolutional
#   positions (kernel 16, 4 groups), Gumbel quantiser with 2 groups x 32
#   codewords, InfoNCE + diversity (0.1) + feature penalty (10) loss as in
#   wav2vec2_base_librispeech.yaml.
#
# Short clips: the default mask_length 10 / mask_prob 0.65 / 100 negatives are
# made for 15 s crops (~750 frames). Our clips are short (espeak-ng gettext
# lines: 0.9-17 s, median 2.3 s; cropped to 3 s = 149 frames) and a batch is
# cropped to its shortest clip. So masking uses 100 ms spans at 0.5 (30-36 % of
# the frames masked, at least 2 spans), and there are 10 negatives, drawn with
# replacement from the masked frames of the same clip (about 8 of them in a
# 0.5 s clip, 50 in a 3 s one; 100 would mostly be repeats). Clips under
# MIN_SAMPLE_SIZE are skipped: two 5-frame spans can cover a clip of a dozen
# frames, and compute_mask_indices raises on a fully masked clip.
# Measured speed and losses: examples/data/README.md.
set -euo pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: $0 SPEECH_DIR OUTDIR" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
plugin="$(cd "$here/../../ptnmt_fairseq" && pwd)"
speech_dir="$(cd "$1" && pwd)"
mkdir -p "$2"
outdir="$(cd "$2" && pwd)"

python="${PYTHON:-python3}"
python_dir="$(dirname "$(command -v "$python")")"
if [ -x "$python_dir/fairseq-train" ]; then
    fairseq_train="$python_dir/fairseq-train"
elif command -v fairseq-train > /dev/null; then
    fairseq_train="$(command -v fairseq-train)"
else
    echo "error: no fairseq-train beside $python or on PATH" >&2
    exit 1
fi

max_update="${MAX_UPDATE:-200}"
embed_dim="${EMBED_DIM:-64}"
conv_dim="${CONV_DIM:-$embed_dim}"
warmup="${WARMUP:-$(( max_update / 10 > 0 ? max_update / 10 : 1 ))}"

# 1. wav2vec manifests from the speech-to-text TSVs (n_frames = samples).
"$python" - "$speech_dir" "$outdir/manifest" <<'EOF'
import csv
import os
import sys

speech_dir, manifest_dir = sys.argv[1], sys.argv[2]
os.makedirs(manifest_dir, exist_ok=True)
for split in ("train", "valid"):
    src = os.path.join(speech_dir, f"{split}.tsv")
    if not os.path.isfile(src):
        sys.exit(f"error: {src} not found")
    with open(src, newline="", encoding="utf-8") as f:
        # fairseq's speech-to-text reader settings (no quoting).
        rows = list(csv.DictReader(f, delimiter="\t", quotechar=None, doublequote=False,
                                   lineterminator="\n", quoting=csv.QUOTE_NONE))
    if not rows or not {"audio", "n_frames"} <= set(rows[0]):
        sys.exit(f"error: {src} has no rows with 'audio' and 'n_frames' columns")
    tmp = os.path.join(manifest_dir, f"{split}.tsv.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        print(speech_dir, file=out)
        for row in rows:
            print(f"{row['audio']}\t{int(row['n_frames'])}", file=out)
    os.replace(tmp, os.path.join(manifest_dir, f"{split}.tsv"))
    seconds = sum(int(r["n_frames"]) for r in rows) / 16000
    print(f"{split}: {len(rows)} clips, {seconds:.1f} s of audio", file=sys.stderr)
EOF

# 2. fairseq-train. Word-splitting of EXTRA is intended.
# shellcheck disable=SC2086
"$fairseq_train" "$outdir/manifest" \
    --user-dir "$plugin" --cpu \
    --task audio_pretraining --arch wav2vec2 \
    --min-sample-size "${MIN_SAMPLE_SIZE:-8000}" --max-sample-size "${MAX_SAMPLE_SIZE:-48000}" \
    --conv-feature-layers "[($conv_dim, 10, 5)] + [($conv_dim, 3, 2)] * 4 + [($conv_dim, 2, 2)] * 2" \
    --encoder-layers "${ENCODER_LAYERS:-1}" --encoder-embed-dim "$embed_dim" \
    --encoder-ffn-embed-dim "${FFN_DIM:-$(( 2 * embed_dim ))}" \
    --encoder-attention-heads "${HEADS:-2}" \
    --conv-pos 16 --conv-pos-groups 4 \
    --quantize-targets --latent-vars 32 --latent-groups 2 --final-dim "$embed_dim" \
    --latent-temp "${LATENT_TEMP:-(2,0.5,0.995)}" \
    --dropout-input 0.1 --dropout-features 0.1 --feature-grad-mult 0.1 \
    --mask-length "${MASK_LENGTH:-5}" --mask-prob "${MASK_PROB:-0.5}" \
    --num-negatives "${NUM_NEGATIVES:-10}" --cross-sample-negatives 0 \
    --criterion wav2vec --infonce --loss-weights '[0.1, 10]' \
    --log-keys '["prob_perplexity","code_perplexity","temp"]' \
    --optimizer adam --adam-betas '(0.9, 0.98)' --adam-eps 1e-06 --weight-decay 0.01 \
    --lr "${LR:-0.002}" --lr-scheduler polynomial_decay \
    --warmup-updates "$warmup" --total-num-update "$max_update" \
    --max-update "$max_update" --max-tokens "${MAX_TOKENS:-320000}" \
    --required-batch-size-multiple 1 --skip-invalid-size-inputs-valid-test \
    --num-workers 0 --seed "${SEED:-1}" \
    --save-dir "$outdir" --no-epoch-checkpoints \
    --log-format simple --log-interval "${LOG_INTERVAL:-10}" \
    ${EXTRA:-} 2>&1 | tee -a "$outdir/train.log"

for f in checkpoint_last.pt checkpoint_best.pt; do
    if [ ! -f "$outdir/$f" ]; then
        echo "error: fairseq-train wrote no $outdir/$f (see $outdir/train.log)" >&2
        exit 1
    fi
done
