#!/usr/bin/env bash
# C-MLM distillation pipeline (Chen et al., ACL 2020): prepare -> teacher (BERT fine-tuned as a
# conditional MLM) -> dump (its top-K soft labels, once) -> baseline and KD student -> evaluate.
#
# Usage: recipes/cmlm_kd/run.sh WORKDIR [STEP...]
#   STEP: prepare   gettext SRC-TGT corpus, WordPiece-tokenised and binarised with BERT's own
#                   vocabulary on both sides (examples/data/bert_binarize.sh, translation_bert):
#                   the student's vocabulary is the teacher's
#         teacher   fine-tune BERT as a C-MLM (task cmlm_finetune, model cmlm_teacher,
#                   criterion cmlm; BERT's optimiser: Adam, weight decay 0.01, linear warm-up
#                   over a tenth of the updates, then linear decay to 0)
#         dump      the teacher's top-K (K=128) logits of every training target position, 7
#                   circular masked copies per sentence, into WORKDIR/soft_labels
#         baseline  the student architecture with label-smoothed cross-entropy only
#         student   the same with cmlm_kd: alpha * KD + (1 - alpha) * label-smoothed XE
#         evaluate  decode the test split with both; BLEU of each
#         all       every step above (the default)
# Each system decodes into WORKDIR/<system>/test.gen; BLEU is tokenised sacreBLEU of its H- lines,
# WordPiece joined, against the raw target test text WORKDIR/pair/test.SRC-TGT.TGT in BERT's basic
# tokenisation (lower-cased for an uncased BERT; never fairseq's T- lines).
#
# Environment (CPU-sized defaults run on the gettext de-en corpus with the packaged MiniLM):
#   SRC=de TGT=en                 direction (the gettext corpus is English-centric)
#   BERT                          the teacher BERT and the vocabulary of both sides (default
#                                 all-MiniLM-L6-v2; the paper: bert-base-multilingual-cased)
#   MAX_TRAIN=N                   cap the training pairs (default: all)
#   TEACHER_UPDATES=N TEACHER_LR  C-MLM fine-tuning (default 600 updates, peak lr 5e-5)
#   TEACHER_TOKENS=N              BERT positions per teacher batch (default 4096)
#   KD_ALPHA, KD_TEMPERATURE, KD_TOPK   the loss (default 0.5, 10, 8: the paper's IWSLT De-En)
#   MAX_UPDATE=N  MAX_TOKENS=N    budget of the baseline and of the student (default 600, 2048)
#   MINUTES=M                     a wall-clock budget for each of the two (--stop-time-hours)
#   STUDENT_ARCH                  fairseq-train architecture options of both (default: a 3+3-layer
#                                 d256 transformer; any fairseq seq2seq model, e.g. --arch lstm)
#   LR                            their peak learning rate (default 1e-3, inverse_sqrt, warm-up 200)
#   BEAM=N  LENPEN=F              decoding (default 5, 1.0; the paper: 4, 0.6)
#   TRAIN_EXTRA, GEN_EXTRA        extra fairseq-train / fairseq-generate options (word-split)
#   DUMP_EXTRA                    extra dump_soft_labels options (e.g. --bf16, --max-tokens N)
#
# Paper settings (Chen et al., 2020, Sec. 4 and appendix A; ChenRocks/Distill-BERT-Textgen and its
# OpenNMT fork), for GPUs on IWSLT14 De-En:
#   teacher: BERT=bert-base-multilingual-cased, lr 5e-5, 100k steps, 5 % warm-up, 16k tokens,
#   weight decay 0.01, dropout 0.1, mask probability 0.15 ([MASK] only), output layer over the
#   student vocabulary initialised from BERT's embeddings; soft labels: 7 circular copies, top-128
#   stored, K=8 used; student: Transformer base 6+6 d512 (STUDENT_ARCH="--arch transformer
#   --share-all-embeddings"), dropout 0.3, Adam (0.9, 0.98), inverse_sqrt warm-up 8000 peak lr
#   9.9e-4 (noam eta 2), 6k tokens, 100k steps, KD_ALPHA=0.5 KD_TEMPERATURE=10 (En-Vi and WMT:
#   0.1 and 5); decode BEAM=4 LENPEN=0.6. Reported IWSLT14 De-En test BLEU: 34.09 (Transformer)
#   against 35.63 (with the BERT teacher), tokenised multi-bleu.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
set_workdir "$@"; shift
src="${SRC:-de}"; tgt="${TGT:-en}"
bert="${BERT:-all-MiniLM-L6-v2}"
lang_other="$(non_english_side "$src" "$tgt")"
data="$work/bert-bin"
teacher_updates="${TEACHER_UPDATES:-600}"
read -r -a student_arch <<< "${STUDENT_ARCH:---arch transformer --share-all-embeddings --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --decoder-attention-heads 4}"

prepare() {
    prepare_gettext "$work/raw" "$lang_other"
    link_gettext_direction "$work/raw" "$work/pair" "$src" "$tgt"
    [ -f "$data/train.$src-$tgt.$tgt.bin" ] || PYTHON="$python" bash "$repo/examples/data/bert_binarize.sh" \
        "$work/pair" "$src-$tgt" "$src" "$tgt" "$bert" "$bert" "$data"
}

train_teacher() {
    # shellcheck disable=SC2046
    train_logged "$work/teacher" "$data" --task cmlm_finetune --bert "$bert" --arch cmlm_teacher \
        --criterion cmlm --optimizer adam --adam-betas '(0.9,0.999)' --weight-decay 0.01 \
        --lr "${TEACHER_LR:-5e-5}" --lr-scheduler polynomial_decay --end-learning-rate 0 \
        --warmup-updates "$(tenth_of "$teacher_updates")" --total-num-update "$teacher_updates" \
        --max-update "$teacher_updates" --max-tokens "${TEACHER_TOKENS:-4096}" --clip-norm 1.0 \
        --log-interval 50
}

dump_soft_labels() {
    [ -f "$work/teacher/checkpoint_best.pt" ] || die "run the teacher step first"
    # shellcheck disable=SC2086
    "$python" -m ptnmt_fairseq.cmlm_kd.dump_soft_labels "$data" --path "$work/teacher/checkpoint_best.pt" \
        --out "$work/soft_labels" --cpu ${DUMP_EXTRA:-} 2> "$work/dump.log" | tail -1 \
        || die "dumping the soft labels failed (see $work/dump.log)"
    [ -f "$work/soft_labels/header.json" ] || die "dumping the soft labels failed (see $work/dump.log)"
}

train_student() {  # SYSTEM: baseline or student
    local system="$1" args
    if [ "$system" = student ]; then
        [ -f "$work/soft_labels/header.json" ] || die "run the dump step first"
        # fairseq-train would resume a student trained on older labels without a word
        [ ! "$work/soft_labels/header.json" -nt "$work/student/checkpoint_last.pt" ] \
            || [ ! -f "$work/student/checkpoint_last.pt" ] \
            || die "the soft labels are newer than $work/student: remove it to train afresh"
        args=(--task translation_cmlm_kd --soft-labels "$work/soft_labels" --criterion cmlm_kd
              --kd-alpha "${KD_ALPHA:-0.5}" --kd-temperature "${KD_TEMPERATURE:-10}"
              --kd-topk "${KD_TOPK:-8}")
    else
        args=(--task translation_bert --criterion label_smoothed_cross_entropy)
    fi
    # shellcheck disable=SC2046
    train_logged "$work/$system" "$data" "${student_arch[@]}" "${args[@]}" --label-smoothing 0.1 \
        --optimizer adam --adam-betas '(0.9,0.98)' --lr "${LR:-1e-3}" --lr-scheduler inverse_sqrt \
        --warmup-updates 200 --max-tokens "${MAX_TOKENS:-2048}" --log-interval 50 \
        $(budget_options "${MAX_UPDATE:-600}" "${MINUTES:-}")
}

evaluate() {  # SYSTEM
    local out="$work/$1/test.gen"
    generate_logged "$out" "$data" --task translation_bert --path "$work/$1/checkpoint_best.pt" \
        --gen-subset test --beam "${BEAM:-5}" --lenpen "${LENPEN:-1.0}" --max-tokens 4000
    echo -n "$1 test: "
    score_wordpiece "$out" "$work/pair/test.$src-$tgt.$tgt" "$bert"
}

step_prepare() { prepare; }
step_teacher() { train_teacher; }
step_dump() { dump_soft_labels; }
step_baseline() { train_student baseline; }
step_student() { train_student student; }
step_evaluate() { evaluate baseline; evaluate student; }

run_steps "prepare teacher dump baseline student evaluate" "prepare teacher dump baseline student evaluate" "$@"
