#!/usr/bin/env bash
# AB-Net pipeline (Guo et al., NeurIPS 2020): prepare -> [distil] -> train -> generate -> BLEU.
#
# Usage: recipes/abnet/run.sh WORKDIR [SYSTEM...]
#   SYSTEM: abnet (default), abnet_fb, abnet_enc, abnet_enc_cmlm, cmlm (fairseq's Mask-Predict
#           baseline, cmlm_transformer), transformer (autoregressive baseline, 3+3 layers d256),
#           transformer_bert_size (autoregressive, with TGT_BERT's depth and width on each side:
#           latency like for like)
# Each system decodes the test split into WORKDIR/<system>/test.gen; BLEU is tokenised sacreBLEU
# of its H- lines, WordPiece joined, against the raw target test text WORKDIR/pair/test.SRC-TGT.TGT
# in TGT_BERT's basic tokenisation (never the T- lines; lower-cased when TGT_BERT is uncased).
#
# Environment (CPU-sized defaults run on the gettext de-en corpus with the packaged MiniLM):
#   SRC=de TGT=en                 direction (the gettext corpus is English-centric)
#   SRC_BERT, TGT_BERT            HF BERT names/dirs (default all-MiniLM-L6-v2 on both sides)
#   MAX_TRAIN=N                   cap training pairs (default: all)
#   MAX_UPDATE=N  MAX_TOKENS=N    training budget per system (default 600, 2048)
#   DISTILL=1                     sequence-level KD (Sec. 4.1): an AR teacher re-writes the
#                                 training targets with fairseq-generate; the non-autoregressive
#                                 systems (abnet, abnet_fb, abnet_enc_cmlm, cmlm) train on them,
#                                 the autoregressive ones (transformer, transformer_bert_size,
#                                 abnet_enc) on the training targets
#   TEACHER=abnet_enc|transformer|transformer_bert_size
#                                 the AR teacher (default abnet_enc): WORKDIR/TEACHER/
#                                 checkpoint_last.pt when it exists (and then not retrained as a
#                                 SYSTEM), trained first otherwise
#   DISTILL_BEAM=K                the teacher's beam (default 5); its output, WordPiece joined in
#                                 TGT_BERT's basic tokenisation, is kept in WORKDIR/distilled/train.TGT
#   TRAIN_TARGET=FILE             target side of the training pairs for every system of this
#                                 WORKDIR, one line per line of the corpus (e.g. another run's
#                                 WORKDIR/distilled/train.TGT: a teacher's output re-tokenised for
#                                 other BERTs)
#   Binarised data records what it was built from (DIR/built_as.txt); a later run that needs it
#   built otherwise (another TRAIN_TARGET, BERT, TEACHER, beam or GEN_EXTRA) stops and names it.
#   ARCH_SIZE=tiny|iwslt|base     AB-Net preset (default tiny; see README for the paper's sizes)
#   TRAIN_EXTRA, GEN_EXTRA        extra fairseq-train / fairseq-generate options (e.g. a
#                                 --stop-time-hours training budget in TRAIN_EXTRA; GEN_EXTRA
#                                 also reaches the distillation teacher's decoding)
#   AR_EXTRA                      extra fairseq-train options of the fairseq Transformers only
#                                 (transformer, transformer_bert_size), e.g. a learning rate
#   SKIP_GENERATE=1               train only
#   AVERAGE=N  SAVE_INTERVAL=K    decode the average of the N newest checkpoints, one saved every
#                                 K updates (default 100; the paper averages the last 10)
#
# Paper settings (Guo et al. 2020, Sec. 4.1, and the README of lemmonation/abnet), for GPUs:
#   IWSLT14 De-En: SRC_BERT=bert-base-german-cased TGT_BERT=bert-base-uncased ARCH_SIZE=iwslt
#     (d_Aenc 512), Adam (0.9, 0.98), lr 5e-4, inverse_sqrt, warmup 4000, label smoothing 0.1,
#     ~4096 tokens/update, 200k updates; decode --iter-decode-max-iter 9 (T=10 passes)
#     --iter-decode-with-beam 4 (B=4), average the last 10 checkpoints.
#   WMT14 En-De: bert-base-cased / bert-base-german-cased, ARCH_SIZE=base (d_Aenc 2048),
#     2048 tokens x 2 x 8 GPUs, 500k updates, DISTILL=1.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
set_workdir "$@"; shift
systems=("${@:-abnet}")
src="${SRC:-de}"; tgt="${TGT:-en}"
src_bert="${SRC_BERT:-all-MiniLM-L6-v2}"; tgt_bert="${TGT_BERT:-all-MiniLM-L6-v2}"
size="${ARCH_SIZE:-tiny}"
max_update="${MAX_UPDATE:-600}"; max_tokens="${MAX_TOKENS:-2048}"
lang_other="$(non_english_side "$src" "$tgt")"

prepare() {
    prepare_gettext "$work/raw" "$lang_other"
    link_gettext_direction "$work/raw" "$work/pair" "$src" "$tgt"
    if [ -n "${TRAIN_TARGET:-}" ]; then
        local expected; expected="$(wc -l < "$work/pair/train.$src-$tgt.$src")"
        [ "$(wc -l < "$TRAIN_TARGET")" = "$expected" ] || \
            die "TRAIN_TARGET $TRAIN_TARGET: $(wc -l < "$TRAIN_TARGET") lines, the corpus has $expected"
        ln -sf "$(realpath "$TRAIN_TARGET")" "$work/pair/train.$src-$tgt.$tgt"
    fi
    local built="targets ${TRAIN_TARGET:-of the corpus}; $src_bert -> $tgt_bert"
    # BERT ids, for AB-Net and AB-Net-Enc
    if ! built_as "$work/bert-bin" "$built"; then
        PYTHON="$python" bash "$repo/examples/data/bert_binarize.sh" "$work/pair" "$src-$tgt" "$src" "$tgt" \
            "$src_bert" "$tgt_bert" "$work/bert-bin"
        echo "$built" > "$work/bert-bin/built_as.txt"
    fi
    # The same WordPiece text with fairseq's own joined dictionary, for fairseq's baselines
    if ! built_as "$work/fairseq-bin" "$built"; then
        "$bin/fairseq-preprocess" --source-lang "$src" --target-lang "$tgt" --joined-dictionary \
            --trainpref "$work/bert-bin/tok/train" --validpref "$work/bert-bin/tok/valid" \
            --testpref "$work/bert-bin/tok/test" --destdir "$work/fairseq-bin" --workers 2 >/dev/null
        echo "$built" > "$work/fairseq-bin/built_as.txt"
    fi
}

built_as() {  # DIR DESCRIPTION: true when DIR holds data built as DESCRIPTION, false when there is
              # no DIR; stops when DIR was built otherwise (or half-built: no record)
    local dir="$1" want="$2" have
    [ -d "$dir" ] || return 1
    have="$(cat "$dir/built_as.txt" 2>/dev/null || echo "unknown: no $dir/built_as.txt")"
    [ "$have" = "$want" ] || die "$dir was built as \"$have\"; this run needs \"$want\": remove it or use another WORKDIR"
}

common_train=(--cpu --user-dir "$plugin" --optimizer adam --adam-betas '(0.9,0.98)'
    --lr-scheduler inverse_sqrt --warmup-updates 200 --max-tokens "$max_tokens"
    --max-update "$max_update" --no-epoch-checkpoints --no-progress-bar --log-interval 50
    --seed 1 --fixed-validation-seed 7 --num-workers 0)
read -r -a averaging <<< "$(average_options)"  # AVERAGE=N: keep N update checkpoints
common_train+=("${averaging[@]}")

train_system() {  # SYSTEM DATA_DIR SAVE_DIR
    local system="$1" data="$2" save="$3"
    local abnet_arch="abnet_$size"; [ "$size" = base ] && abnet_arch=abnet
    local enc_arch="abnet_enc_tiny"; [ "$size" != tiny ] && enc_arch=abnet_enc
    local args
    case "$system" in
        abnet|abnet_fb)
            args=(--task translation_abnet --arch "$abnet_arch" --source-bert "$src_bert" --target-bert "$tgt_bert"
                  --criterion nat_loss --label-smoothing 0.1 --lr 5e-4)
            [ "$system" = abnet_fb ] && args+=(--finetune-bert) ;;
        abnet_enc)
            args=(--task translation_bert --arch "$enc_arch" --source-bert "$src_bert"
                  --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --lr 1e-3) ;;
        abnet_enc_cmlm)
            args=(--task translation_abnet --arch "abnet_enc_cmlm_tiny" --source-bert "$src_bert"
                  --criterion nat_loss --label-smoothing 0.1 --lr 1e-3) ;;
        cmlm)  # fairseq's own Mask-Predict, unchanged
            args=(--task translation_lev --noise random_mask --arch cmlm_transformer --criterion nat_loss
                  --label-smoothing 0.1 --lr 1e-3 --encoder-layers 3 --decoder-layers 3
                  --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024
                  --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --decoder-attention-heads 4
                  --apply-bert-init) ;;
        transformer|transformer_bert_size)
            local shape=(3 256 4 1024)  # layers dim heads ffn
            if [ "$system" = transformer_bert_size ]; then
                read -r -a shape <<< "$(bert_shape "$tgt_bert")"
                [ "${#shape[@]}" = 4 ] || die "transformer_bert_size: cannot read the shape of $tgt_bert"
            fi
            args=(--task translation --arch transformer --criterion label_smoothed_cross_entropy
                  --label-smoothing 0.1 --lr 1e-3 --share-all-embeddings
                  --encoder-layers "${shape[0]}" --decoder-layers "${shape[0]}"
                  --encoder-embed-dim "${shape[1]}" --decoder-embed-dim "${shape[1]}"
                  --encoder-attention-heads "${shape[2]}" --decoder-attention-heads "${shape[2]}"
                  --encoder-ffn-embed-dim "${shape[3]}" --decoder-ffn-embed-dim "${shape[3]}") ;;
        *) echo "unknown system $system" >&2; exit 2 ;;
    esac
    case "$system" in transformer*) read -r -a ar_extra <<< "${AR_EXTRA:-}"; args+=("${ar_extra[@]}") ;; esac
    # (pipefail: the pipeline fails when fairseq-train does)
    if ! "$bin/fairseq-train" "$data" "${common_train[@]}" "${args[@]}" --save-dir "$save" \
        ${TRAIN_EXTRA:-} 2>&1 | { grep -E "trainable parameters|train_inner|done training|[Ee]rror" || true; }; then
        die "$system: fairseq-train failed (its error is above)"
    fi
}

bert_shape() {  # BERT: "layers hidden heads intermediate" of its config
    "$python" - "$1" 2> >(grep -v "compat: applied" >&2) <<'PY'
import sys
from transformers import AutoConfig
from ptnmt_fairseq.common.bert.pretrained import resolve_bert
c = AutoConfig.from_pretrained(resolve_bert(sys.argv[1], "TGT_BERT"))
print(c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size)
PY
}

generate_args() {  # SYSTEM -> task + decoding options
    case "$1" in
        abnet|abnet_fb|abnet_enc_cmlm) echo --task translation_abnet --iter-decode-max-iter 9 --iter-decode-with-beam 4 ;;
        cmlm) echo --task translation_lev --iter-decode-max-iter 9 --iter-decode-with-beam 4 ;;
        abnet_enc) echo --task translation_bert --beam 5 ;;
        transformer|transformer_bert_size) echo --task translation --beam 5 ;;
    esac
}

data_for() {  # SYSTEM: its binarised data; with DISTILL=1 the non-autoregressive ones get the teacher's
    local distilled="${DISTILL:-0}"
    case "$1" in
        transformer|transformer_bert_size) echo "$work/fairseq-bin" ;;
        abnet_enc) echo "$work/bert-bin" ;;
        cmlm) [ "$distilled" = 1 ] && echo "$work/distilled-fairseq-bin" || echo "$work/fairseq-bin" ;;
        *) [ "$distilled" = 1 ] && echo "$work/distilled-bin" || echo "$work/bert-bin" ;;
    esac
}

teacher_task() { case "$1" in transformer*) echo translation ;; *) echo translation_bert ;; esac; }

distill() {  # Sec. 4.1: sequence-level KD (Kim & Rush, 2016) with an AR teacher
    local teacher="${TEACHER:-abnet_enc}"
    case "$teacher" in abnet_enc|transformer|transformer_bert_size) ;;
        *) die "TEACHER=$teacher: abnet_enc, transformer or transformer_bert_size" ;; esac
    local built="teacher $teacher, beam ${DISTILL_BEAM:-5}, generate options: ${GEN_EXTRA:-none}"
    built_as "$work/distilled-bin" "$built" && built_as "$work/distilled-fairseq-bin" "$built" && return
    if [ ! -f "$work/$teacher/checkpoint_last.pt" ]; then
        echo "== distillation: train the AR teacher ($teacher)"
        train_system "$teacher" "$(data_for "$teacher")" "$work/$teacher"
    fi
    echo "== distillation: $teacher re-writes the training targets (beam ${DISTILL_BEAM:-5})"
    "$bin/fairseq-generate" "$(data_for "$teacher")" --user-dir "$plugin" --cpu --task "$(teacher_task "$teacher")" \
        --path "$work/$teacher/checkpoint_last.pt" --gen-subset train --beam "${DISTILL_BEAM:-5}" \
        --batch-size 128 ${GEN_EXTRA:-} > "$work/$teacher/train.gen" 2>"$work/$teacher/train.gen.log" \
        || die "distillation: fairseq-generate failed (see $work/$teacher/train.gen.log)"
    mkdir -p "$work/distilled/tok"
    # H-i is training pair i: its source is line i of the tokenised corpus (not the S- line,
    # which shows <unk> and [CLS] as the teacher's dictionary sees them).
    "$python" - "$work/$teacher/train.gen" "$work/bert-bin/tok/train.$src" "$work/distilled" "$src" "$tgt" <<'PY'
import sys
gen, source, out, src, tgt = sys.argv[1:]
hyps = {}
for line in open(gen, encoding="utf-8"):
    if line.startswith("H-"):
        i, _, text = line.rstrip("\n").split("\t", 2)
        hyps[int(i[2:])] = text
sources = open(source, encoding="utf-8").read().splitlines()
if sorted(hyps) != list(range(len(sources))):
    sys.exit(f"distillation: {gen} has {len(hyps)} translations for {len(sources)} training pairs")
with open(f"{out}/tok/train.{src}", "w") as fs, open(f"{out}/tok/train.{tgt}", "w") as ft, \
        open(f"{out}/train.{tgt}", "w") as raw:
    for i, text in enumerate(sources):
        fs.write(text + "\n"); ft.write(hyps[i] + "\n")
        raw.write(hyps[i].replace(" ##", "") + "\n")  # WordPiece joined: TRAIN_TARGET text
PY
    "$bin/fairseq-preprocess" --user-dir "$plugin" --task translation_abnet --source-lang "$src" --target-lang "$tgt" \
        --trainpref "$work/distilled/tok/train" --validpref "$work/bert-bin/tok/valid" --testpref "$work/bert-bin/tok/test" \
        --srcdict "$work/bert-bin/dict.$src.txt" --tgtdict "$work/bert-bin/dict.$tgt.txt" \
        --destdir "$work/distilled-bin" --workers 2 >/dev/null
    # The same distilled text in fairseq's joined dictionary, for fairseq's cmlm_transformer
    "$bin/fairseq-preprocess" --source-lang "$src" --target-lang "$tgt" --joined-dictionary \
        --trainpref "$work/distilled/tok/train" --validpref "$work/bert-bin/tok/valid" --testpref "$work/bert-bin/tok/test" \
        --srcdict "$work/fairseq-bin/dict.$src.txt" \
        --destdir "$work/distilled-fairseq-bin" --workers 2 >/dev/null
    echo "$built" > "$work/distilled-bin/built_as.txt"
    echo "$built" > "$work/distilled-fairseq-bin/built_as.txt"
}

echo "== prepare: gettext $src-$tgt, WordPiece with $src_bert / $tgt_bert"
prepare
[ "${DISTILL:-0}" = 1 ] && distill
for system in "${systems[@]}"; do
    echo "== train $system"
    if [ "${DISTILL:-0}" = 1 ] && [ "$system" = "${TEACHER:-abnet_enc}" ] && [ -f "$work/$system/checkpoint_last.pt" ]; then
        echo "(the distillation teacher, trained above)"
    else
        train_system "$system" "$(data_for "$system")" "$work/$system"
    fi
    [ "${SKIP_GENERATE:-0}" = 1 ] && continue
    echo "== generate $system"
    checkpoint="$(decoded_checkpoint "$work/$system" checkpoint_last.pt)"
    # shellcheck disable=SC2046
    generate_logged "$work/$system/test.gen" "$(data_for "$system")" --gen-subset test \
        --path "$checkpoint" --batch-size 32 $(generate_args "$system")
    echo -n "$system $src->$tgt test: "
    score_wordpiece "$work/$system/test.gen" "$work/pair/test.$src-$tgt.$tgt" "$tgt_bert"
done
