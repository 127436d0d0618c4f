#!/usr/bin/env bash
# XSTNet pipeline (Ye et al., Interspeech 2021) on synthesised speech (espeak-ng over gettext):
# prepare -> wav2vec 2.0 -> stage 1 (MT pre-training) -> stage 2 (ST+ASR+MT) -> evaluate.
#
# Usage: recipes/xstnet/run.sh WORKDIR [STEP...]
#   STEP: prepare  gettext SRC-TGT corpus, espeak-ng speech for MAX_SPEECH train / MAX_EVAL
#                  valid and test lines, joint sentencepiece, dict, config.yaml and the external
#                  MT pairs (gettext train pairs whose source is not a speech transcript)
#         w2v      pre-train a small wav2vec 2.0 (pretrain_wav2vec2.sh), unless W2V_PATH is set
#         stage1   MT pre-training on transcript/translation pairs + external MT (--train-tasks mt)
#         stage2   XSTNet multi-task fine-tuning from stage 1 (--train-tasks st,asr,mt + external MT)
#         evaluate XSTNet ST BLEU, ASR WER and MT BLEU on the test split (also stage 1's MT BLEU)
#         st_only  baseline: the same model trained on ST alone from wav2vec 2.0 (no MT data)
#         cascade  baseline: an ASR-only model (--train-tasks asr), its test transcripts
#                  translated by the stage-1 MT model
#         all      every step above
#   default: prepare w2v stage1 stage2 evaluate
# Every system trains in WORKDIR/<system>/ (train.log appended; fairseq-train resumes from
# checkpoint_last.pt, so re-running a step with the same MAX_UPDATE_* only re-validates) and
# decodes checkpoint_best.pt (lowest valid loss) into WORKDIR/<system>/test.<task>.gen. BLEU is case-sensitive detokenised sacreBLEU
# (sacrebleu.corpus_bleu on the D-/T- lines, the same for all systems); WER is on lowercased
# words with punctuation removed.
#
# Environment (CPU-sized defaults: about 6 minutes for the default steps on 2 cores, 11 for `all`):
#   SRC=en TGT=fr                 direction; SRC is spoken (the gettext corpus is English-centric)
#   MAX_SPEECH=N  MAX_EVAL=N      speech triples for train / valid and test (default 2000, 200)
#   MAX_TRAIN=N                   cap the gettext training pairs (the external MT; default: all)
#   VOCAB_SIZE=N                  joint sentencepiece size (default 1000)
#   W2V_PATH=CKPT                 a fairseq wav2vec 2.0 checkpoint (e.g. wav2vec_small.pt);
#                                 otherwise W2V_UPDATE (default 200) updates of a small one
#   ARCH=xstnet_tiny|xstnet       model preset (default xstnet_tiny: 2+2 layers, d128)
#   MAX_UPDATE_MT, MAX_UPDATE_ST  updates of stage 1 / of stage 2, ST-only and ASR (default 800,
#                                 800); WARMUP_MT, WARMUP_ST (default a tenth of them)
#   LR_MT, LR_ST                  peak learning rates (default 1e-3, 1e-3)
#   MAX_TOKENS=N                  audio samples per speech batch (default 400000 = 25 s)
#   MAX_TOKENS_TEXT=N             tokens per text-only batch (default 2000)
#   EXTERNAL_MT_RATIO=F           fraction of the external-MT batches used per stage-2 epoch
#                                 (default 0.25, after the paper's text ratio 0.25)
#   FREEZE_W2V=1                  keep wav2vec 2.0 frozen (the paper fine-tunes it)
#   BEAM=N                        beam size (default 5)
#   TRAIN_EXTRA, GEN_EXTRA        extra fairseq-train / fairseq-generate options (word-split)
#
# Paper settings (Ye et al. 2021 and the author's fairseq port ReneeYe/ConST; see
# ../shared/anchors/speech.md), for GPUs on MuST-C:
#   W2V_PATH=wav2vec_small.pt (self-supervised Base, fine-tuned, raw waveform, no normalisation);
#   ARCH=xstnet: shrinker 2x Conv1d kernel 5 stride 2 -> 512, 6+6 layers, d512, FFN 2048,
#   8 heads, pre-norm, dropout 0.1; joint spm unigram 10k (VOCAB_SIZE=10000) + <lang:xx> tags;
#   loss CE_ST + CE_ASR + CE_MT with label smoothing 0.1; Adam (0.9, 0.98), lr 1e-4 inverse_sqrt
#   warmup 25k (MT pre-training lr 5e-4), clip-norm 10, MAX_TOKENS=1000000 MAX_TOKENS_TEXT=2000,
#   update-freq 2, text ratio 0.25; decode BEAM=10 from the average of the last 10 checkpoints.
#   e.g. W2V_PATH=wav2vec_small.pt ARCH=xstnet VOCAB_SIZE=10000 MAX_TOKENS=1000000 \
#        LR_MT=5e-4 LR_ST=1e-4 WARMUP_MT=4000 WARMUP_ST=25000 BEAM=10 TRAIN_EXTRA="--update-freq 2"
#   Reported MuST-C En-De tst-COMMON BLEU: 25.5 (XSTNet base), 27.8 (expand, + external MT).
#
# Measured with the defaults (`all`, 2-core CPU, torch 2.9.1, fairseq 0.12.3): 11m11s wall
# (prepare 25 s, w2v 20 s, stage1 80 s, stage2 160 s, st_only 150 s, asr 141 s of fairseq-train,
# the rest start-up and decoding). Test (200 sentences), sacreBLEU / WER: XSTNet ST 0.46, ASR WER
# 104, MT 3.61; stage-1 MT 3.64; ST-only 0.20; cascade 0.05 (its ASR: WER 104). Models this small
# and this short do not learn speech yet; see benchmarks/xstnet.py for the controlled comparison.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[ "$#" -ge 1 ] || { sed -n 2,59p "$0" >&2; exit 2; }
work="$1"; shift
if [ "$#" -eq 0 ]; then steps=(prepare w2v stage1 stage2 evaluate); else steps=("$@"); fi
[ "${steps[*]}" = all ] && steps=(prepare w2v stage1 stage2 evaluate st_only cascade)
python="${PYTHON:-$repo/.venv/bin/python}"
bin="$(dirname "$python")"
src="${SRC:-en}"; tgt="${TGT:-fr}"
max_speech="${MAX_SPEECH:-2000}"; max_eval="${MAX_EVAL:-200}"
arch="${ARCH:-xstnet_tiny}"
max_update_mt="${MAX_UPDATE_MT:-800}"; max_update_st="${MAX_UPDATE_ST:-800}"
warmup_mt="${WARMUP_MT:-$(( max_update_mt / 10 > 0 ? max_update_mt / 10 : 1 ))}"
warmup_st="${WARMUP_ST:-$(( max_update_st / 10 > 0 ? max_update_st / 10 : 1 ))}"
max_tokens="${MAX_TOKENS:-400000}"; max_tokens_text="${MAX_TOKENS_TEXT:-2000}"
beam="${BEAM:-5}"
plugin="$repo/ptnmt_fairseq"
lang_other=$([ "$src" = en ] && echo "$tgt" || echo "$src")
mkdir -p "$work"
work="$(cd "$work" && pwd)"; data="$work/data"
w2v="${W2V_PATH:-$work/w2v/checkpoint_best.pt}"

prepare() {
    [ -f "$work/raw/test.en-$lang_other.en" ] || \
        MAX_TRAIN="${MAX_TRAIN:-}" PYTHON="$python" bash "$repo/examples/data/prepare_gettext.sh" "$work/raw" "$lang_other"
    if [ ! -f "$data/test.tsv" ]; then
        # the first MAX_SPEECH train / MAX_EVAL valid and test lines get speech
        mkdir -p "$work/speech_text"
        for split in train valid test; do
            local n=$([ "$split" = train ] && echo "$max_speech" || echo "$max_eval")
            for lang in en "$lang_other"; do
                head -n "$n" "$work/raw/$split.en-$lang_other.$lang" > "$work/speech_text/$split.en-$lang_other.$lang"
            done
        done
        PYTHON="$python" bash "$repo/examples/data/synthesize_speech.sh" "$work/speech_text" "$src" "$tgt" "$data"
    fi
    # joint vocabulary over transcripts, translations and the external MT text; train_mt.tsv
    [ -f "$data/train_mt.tsv" ] || \
        "$python" "$repo/examples/data/prepare_speech_vocab.py" "$data" --vocab-size "${VOCAB_SIZE:-1000}" \
            --external-mt "$work/raw/train.en-$lang_other" --src "$src" --tgt "$tgt"
    echo "triples: $(( $(wc -l < "$data/train.tsv") - 1 )) train, $(( $(wc -l < "$data/valid.tsv") - 1 )) valid," \
         "$(( $(wc -l < "$data/test.tsv") - 1 )) test; external MT: $(( $(wc -l < "$data/train_mt.tsv") - 1 )) pairs"
}

pretrain_w2v() {
    if [ -n "${W2V_PATH:-}" ]; then
        [ -f "$W2V_PATH" ] || { echo "W2V_PATH=$W2V_PATH does not exist" >&2; exit 1; }
        echo "using $W2V_PATH"; return
    fi
    [ -f "$work/w2v/checkpoint_best.pt" ] && { echo "using $work/w2v/checkpoint_best.pt"; return; }
    MAX_UPDATE="${W2V_UPDATE:-200}" PYTHON="$python" bash "$repo/examples/data/pretrain_wav2vec2.sh" \
        "$data" "$work/w2v" | grep -E "valid on|done training|Error" || true
    [ -f "$work/w2v/checkpoint_best.pt" ] || { echo "wav2vec 2.0 pre-training failed (see $work/w2v/train.log)" >&2; exit 1; }
}

common_train=(--cpu --user-dir "$plugin" --task xstnet --arch "$arch" --w2v-path "$w2v"
    --criterion xstnet_multitask --label-smoothing 0.1 --optimizer adam --adam-betas '(0.9,0.98)'
    --lr-scheduler inverse_sqrt --clip-norm 10 --max-tokens "$max_tokens" --max-tokens-text "$max_tokens_text"
    --skip-bad-audio --no-epoch-checkpoints --no-progress-bar --log-format simple --log-interval 20
    --seed 1 --num-workers 0)
[ "${FREEZE_W2V:-0}" = 1 ] && common_train+=(--freeze-w2v)

train_system() {  # SYSTEM: fairseq-train into $work/SYSTEM
    local system="$1" save="$work/$1" args
    [ -f "$w2v" ] || { echo "no wav2vec 2.0 checkpoint $w2v: run the w2v step or set W2V_PATH" >&2; exit 1; }
    case "$system" in
        stage1)  # MT pre-training on the triples' text and the external pairs; no audio is read
            args=(--train-tasks mt --external-mt train_mt.tsv --lr "${LR_MT:-1e-3}"
                  --warmup-updates "$warmup_mt" --max-update "$max_update_mt") ;;
        stage2)  # "don't stop training D_MT-ext": external MT stays in the mix
            [ -f "$work/stage1/checkpoint_best.pt" ] || { echo "run stage1 first" >&2; exit 1; }
            args=(--train-tasks st,asr,mt --external-mt train_mt.tsv
                  --external-mt-ratio "${EXTERNAL_MT_RATIO:-0.25}"
                  --finetune-from-model "$work/stage1/checkpoint_best.pt") ;;
        st_only) args=(--train-tasks st) ;;
        asr)     args=(--train-tasks asr) ;;
        *) echo "unknown system $system" >&2; exit 2 ;;
    esac
    [ "$system" != stage1 ] && args+=(--lr "${LR_ST:-1e-3}" --warmup-updates "$warmup_st" --max-update "$max_update_st")
    mkdir -p "$save"
    # shellcheck disable=SC2086
    "$bin/fairseq-train" "$data" "${common_train[@]}" "${args[@]}" --save-dir "$save" \
        ${TRAIN_EXTRA:-} 2>&1 | tee -a "$save/train.log" \
        | grep -E "trainable|\| train \||\| valid \||done training|Error" | sed -E 's/^.*\| (train|valid) \|/\1 |/' || true
    [ -f "$save/checkpoint_best.pt" ] || { echo "$system: training failed (see $save/train.log)" >&2; exit 1; }
}

decode() {  # SYSTEM TASK SUBSET [fairseq-generate options]: $work/SYSTEM/SUBSET.TASK.gen
    local system="$1" task="$2" subset="$3"; shift 3
    local out="$work/$system/$subset.$task.gen" scoring=sacrebleu
    [ "$task" = asr ] && scoring=wer
    # shellcheck disable=SC2086
    "$bin/fairseq-generate" "$data" --user-dir "$plugin" --cpu --task xstnet --eval-task "$task" \
        --gen-subset "$subset" --path "$work/$system/checkpoint_best.pt" --max-tokens 500000 \
        --beam "$beam" --scoring "$scoring" "$@" ${GEN_EXTRA:-} > "$out" 2> "${out%.gen}.log" \
        || { echo "$system: fairseq-generate failed (see ${out%.gen}.log)" >&2; exit 1; }
    echo -n "$system $task $subset: "
    score "$out" "$task"
}

score() {  # GEN TASK: sacreBLEU (st, mt) or WER (asr) of the D- lines against the T- lines
    local metric=bleu
    [ "$2" = asr ] && metric=wer
    "$python" -m ptnmt_fairseq.common.scoring "$1" --detokenized --metric "$metric" 2> "${1%.gen}.score.log" \
        || { echo "scoring $1 failed (see ${1%.gen}.score.log)" >&2; exit 1; }
    [ "$2" = asr ] && echo "  (lowercased, no punctuation; fairseq: $(grep -m1 '^Generate ' "$1" | sed 's/.*: //'))"
    return 0
}

cascade() {  # the ASR model's test transcripts -> a text manifest -> the stage-1 MT model
    [ -f "$work/stage1/checkpoint_best.pt" ] || { echo "cascade: run stage1 first (its MT model)" >&2; exit 1; }
    decode asr asr test
    "$python" - "$data/test.tsv" "$work/asr/test.asr.gen" "$data/cascade_test.tsv" <<'PY'
import csv, sys
manifest, gen, out = sys.argv[1:]
with open(manifest, encoding="utf-8", newline="") as f:
    rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
hyp = {}
for line in open(gen, encoding="utf-8"):
    if line.startswith("D-"):
        idx, _, text = line.rstrip("\n")[2:].split("\t", 2)
        hyp[int(idx)] = " ".join(text.split())
with open(out, "w", encoding="utf-8") as f:
    f.write("id\tsrc_text\ttgt_text\tsrc_lang\ttgt_lang\n")
    for i, row in enumerate(rows):  # D- ids are row indices of the manifest
        f.write("\t".join([row["id"], hyp.get(i, ""), row["tgt_text"], row["src_lang"], row["tgt_lang"]]) + "\n")
PY
    mkdir -p "$work/cascade"
    decode stage1 mt cascade_test --train-tasks mt
    cp "$work/stage1/cascade_test.mt.gen" "$work/cascade/test.st.gen"
    echo -n "cascade st test: "; score "$work/cascade/test.st.gen" st
}

for step in "${steps[@]}"; do
    echo "== $step"
    case "$step" in
        prepare) prepare ;;
        w2v) pretrain_w2v ;;
        stage1|stage2) train_system "$step" ;;
        evaluate)
            decode stage2 st test; decode stage2 asr test; decode stage2 mt test
            decode stage1 mt test --train-tasks mt ;;
        st_only) train_system st_only; decode st_only st test ;;
        cascade) train_system asr; cascade ;;
        *) echo "unknown step $step (prepare w2v stage1 stage2 evaluate st_only cascade all)" >&2; exit 2 ;;
    esac
done
