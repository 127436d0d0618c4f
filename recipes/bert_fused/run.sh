#!/usr/bin/env bash
# BERT-fused pipeline (Zhu et al., ICLR 2020): prepare -> the Transformer baseline -> BERT's
# features of the training set, once -> BERT-fused warm-started from the baseline (and the
# baseline trained on for the same budget, its fair comparison) -> evaluate.
#
# Usage: recipes/bert_fused/run.sh WORKDIR [STEP...]
#   STEP: prepare    gettext SRC-TGT corpus; the source in the source BERT's WordPiece ids, the
#                    target in a cased WordPiece vocabulary learned on it (translation_bert)
#         baseline   the Transformer, label-smoothed cross-entropy
#         cache      the frozen BERT's last layer over the train and valid sources, memory-mapped
#                    in WORKDIR/bert-cache (python -m ptnmt_fairseq.common.bert.feature_cache)
#         fused      BERT-fused: every Transformer tensor from the baseline's checkpoint_best.pt
#                    (--warm-start-nmt, strict), the BERT attentions new, drop-net p_net 1.0,
#                    reading the cached features (CACHE=0: BERT runs live at every step)
#         continued  the baseline trained on from the same checkpoint with the same optimiser
#                    and budget (--finetune-from-model): what the warm start alone gives
#         live       a short BERT-fused run without the cache (LIVE_UPDATES), for its speed
#         evaluate   decode the test split with baseline, bert_fused and continued; BLEU of each
#         all        prepare baseline cache fused continued evaluate (the default)
# The systems train into WORKDIR/{baseline,bert_fused,continued,bert_fused_live}; BLEU is
# tokenised sacreBLEU of the WordPiece-joined H- lines against the raw target test text in the
# target vocabulary's basic tokenisation (never fairseq's T- lines).
#
# Environment (CPU-sized defaults run on the gettext en-de corpus with the packaged MiniLM):
#   SRC=en TGT=de         direction (the gettext corpus is English-centric)
#   BERT                  the frozen source BERT (default all-MiniLM-L6-v2; the paper:
#                         bert-base-cased for IWSLT'14 En-De, bert-base-uncased for De-En...)
#   TGT_VOCAB             a BERT folder whose WordPiece tokenises the target (default: learned)
#   MAX_TRAIN=N           cap the training pairs (default: all)
#   ARCH_DIMS             the Transformer's size (default 3+3 layers, d256, FFN 1024, 4 heads)
#   LR WARMUP MAX_UPDATE MINUTES MAX_TOKENS   the baseline (default 2e-3, 200, 600 updates, 2048)
#   FUSED_LR FUSED_WARMUP FUSED_UPDATES FUSED_MINUTES   BERT-fused and the continued baseline
#                         (default 5e-4 (the authors'), 100, 300 updates, no time limit)
#   DROP_NET=P            p_net (default 1.0, the paper's; the authors' ratio flag is P/2)
#   CACHE=0               BERT-fused without the feature cache
#   LIVE_UPDATES=N        the live speed run (default 40)
#   BEAM=N LENPEN=F       decoding (default 5, 1.0)
#   TRAIN_EXTRA, GEN_EXTRA   extra fairseq-train / fairseq-generate options (word-split)
#
# Paper settings (Zhu et al., 2020, Sec. 5 and bert-nmt/bert-nmt's README), GPUs: IWSLT'14
# En-De, --arch bert_fused_iwslt_de_en (ARCH_DIMS=""), the NMT warm start trained to
# convergence, Adam (0.9, 0.98), lr 5e-4, inverse_sqrt with 4000 warm-up updates, dropout 0.3,
# weight decay 1e-4, 4000 tokens per batch, p_net 1.0 (their --encoder-bert-dropout-ratio 0.5);
# reported test BLEU: Transformer 28.57, BERT-fused 30.45 (IWSLT'14 En->De, Table 1).
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
set_workdir "$@"; shift
src="${SRC:-en}"; tgt="${TGT:-de}"
bert="${BERT:-all-MiniLM-L6-v2}"
cache="$work/bert-cache"

require_baseline() {
    [ -f "$work/baseline/checkpoint_best.pt" ] || die "run the baseline step first"
}

continue_options() {  # the shared optimiser and budget of the runs that start from the
                      # baseline's checkpoint_best.pt
    echo "--lr ${FUSED_LR:-5e-4} --warmup-updates ${FUSED_WARMUP:-100}"
    budget_options "${FUSED_UPDATES:-300}" "${FUSED_MINUTES:-}"
}

fused_options() {
    echo "--arch bert_fused_base --source-bert $bert --drop-net ${DROP_NET:-1.0}"
    echo "--warm-start-nmt $work/baseline/checkpoint_best.pt"
}

step_prepare() { prepare_bert_source_pair "$src" "$tgt" "$bert"; }
step_baseline() { train_bert_nmt baseline --arch transformer; }
step_cache() {
    [ -f "$cache/manifest.json" ] && return 0
    "$python" -m ptnmt_fairseq.common.bert.feature_cache "$work/bert-bin" --source-bert "$bert" \
        -s "$src" -t "$tgt" --splits train valid --layers -1 --out "$cache" \
        > "$work/bert-cache.log" 2>&1 || die "caching BERT's features failed (see $work/bert-cache.log)"
    echo "cached: $(tail -1 "$work/bert-cache.log") seconds"
}
step_fused() {
    local cached=()
    require_baseline
    if [ "${CACHE:-1}" != 0 ]; then
        [ -f "$cache/manifest.json" ] || die "run the cache step first (or CACHE=0)"
        cached=(--bert-feature-cache "$cache")
    fi
    # shellcheck disable=SC2046
    MAX_UPDATE= MINUTES= train_bert_nmt bert_fused $(fused_options) "${cached[@]}" \
        $(continue_options)
}
step_continued() {
    require_baseline
    # shellcheck disable=SC2046
    MAX_UPDATE= MINUTES= train_bert_nmt continued --arch transformer \
        --finetune-from-model "$work/baseline/checkpoint_best.pt" $(continue_options)
}
step_live() {
    local FUSED_UPDATES="${LIVE_UPDATES:-40}" FUSED_MINUTES=
    require_baseline
    # shellcheck disable=SC2046
    MAX_UPDATE= MINUTES= train_bert_nmt bert_fused_live $(fused_options) $(continue_options) \
        --log-interval 5
}
step_evaluate() {
    for system in baseline bert_fused continued; do evaluate_bert_nmt "$system" "$src" "$tgt"; done
}

run_steps "prepare baseline cache fused continued evaluate" \
    "prepare baseline cache fused continued evaluate" "$@"
