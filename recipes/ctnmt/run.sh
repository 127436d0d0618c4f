#!/usr/bin/env bash
# CTNMT pipeline (Yang et al., AAAI 2020): prepare -> the Transformer baseline and the paper's
# ablation rows, each strategy alone and all together -> evaluate.
#
# Usage: recipes/ctnmt/run.sh WORKDIR [STEP...]
#   STEP: prepare   gettext SRC-TGT corpus; the source in the source BERT's WordPiece ids, the
#                   target in a cased WordPiece vocabulary learned on it (translation_bert)
#         baseline  the Transformer, label-smoothed cross-entropy
#         ad        asymptotic distillation alone: the top encoder layer pulled towards BERT's
#                   last layer, L = 0.9 L_nmt + 0.1 L_kd (BERT frozen, teacher only; no BERT
#                   at inference)
#         ds        the dynamic switch alone: BERT's second-to-last layer gated into the
#                   embedding layer, BERT frozen (rho = 0, eval mode)
#         rs        rate-scheduled learning alone: BERT's states as the encoder input (g = 1),
#                   BERT fine-tuned at rho(t) times the NMT learning rate (slanted, Eq. 10)
#         ctnmt     the three together (CTNMT)
#         evaluate  decode the test split with each trained system (or those of SYSTEMS, folder
#                   names of WORKDIR); BLEU of each
#         all       every step above (the default)
# The systems train into WORKDIR/{baseline,ctnmt_ad,ctnmt_ds,ctnmt_rs,ctnmt_all}.
# Each system decodes into WORKDIR/<system>/test.gen; BLEU is tokenised sacreBLEU of its H- lines,
# WordPiece joined, against the raw target test text in the target vocabulary's basic
# tokenisation (never fairseq's T- lines).
#
# Environment (CPU-sized defaults run on the gettext en-de corpus with the packaged MiniLM):
#   SRC=en TGT=de         direction (the gettext corpus is English-centric)
#   BERT                  the source BERT (default all-MiniLM-L6-v2; the paper: bert-base-cased
#                         for En-De, bert-base-chinese for Zh-En)
#   TGT_VOCAB             a BERT folder whose WordPiece tokenises the target (default: learned)
#   MAX_TRAIN=N           cap the training pairs (default: all)
#   ARCH_DIMS             the Transformer's size, every system alike (default 3+3 layers, d256,
#                         FFN 1024, 4 heads, pre-norm)
#   LR WARMUP             peak learning rate and inverse_sqrt warm-up (default 2e-3, 200)
#   MAX_UPDATE=N MINUTES=M   budget of each system (default 600 updates; MINUTES: wall clock)
#   MAX_TOKENS=N          batch size in tokens (default 2048)
#   DISTILL_ALPHA         alpha of Eq. (5) (default 0.9, the paper's)
#   FUSION_LAYER          BERT layer of the switch (default -2, the paper's; NeurST: -1)
#   RATE_WARMUP RATE_TOTAL   T' and T of Eq. (10) (default 100 and 200 updates: the paper's
#                         10k and 20k, scaled to a CPU run)
#   BEAM=N LENPEN=F       decoding (default 5, 1.0)
#   TRAIN_EXTRA, GEN_EXTRA   extra fairseq-train / fairseq-generate options (word-split)
#
# Paper settings (Yang et al., 2020, Sec. 4.1; bytedance/neurst's CTNMT reproduction), GPUs:
#   WMT14 En-De, Transformer base with BERT-base (ARCH_DIMS="" with --arch ctnmt_base; En-Fr:
#   ctnmt_big), Adam (0.9, 0.98), inverse_sqrt with 4000 warm-up updates, label smoothing 0.1,
#   alpha 0.9, T' = 10000, T = 20000, the switch on BERT's second-to-last layer; reported test
#   BLEU (cased multi-bleu): Transformer 27.2, RS 29.7, DS 29.4, AD 29.2, CTNMT 30.1 (Table 1).
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
set_workdir "$@"; shift
src="${SRC:-en}"; tgt="${TGT:-de}"
bert="${BERT:-all-MiniLM-L6-v2}"
ctnmt=(--arch ctnmt_base --source-bert "$bert" --bert-fusion-layer "${FUSION_LAYER:--2}")
distill=(--asymptotic-distillation --criterion ctnmt_distill --distill-alpha "${DISTILL_ALPHA:-0.9}")
rate=(--lr-scheduler rate_scheduled --bert-rate slanted --bert-rate-warmup-updates "${RATE_WARMUP:-100}"
      --bert-rate-total-updates "${RATE_TOTAL:-200}")

step_prepare() { prepare_bert_source_pair "$src" "$tgt" "$bert"; }
step_baseline() { train_bert_nmt baseline --arch transformer; }
step_ad() { train_bert_nmt ctnmt_ad "${ctnmt[@]}" --bert-fusion none "${distill[@]}"; }
step_ds() { train_bert_nmt ctnmt_ds "${ctnmt[@]}" --bert-fusion switch --freeze-bert; }
step_rs() { train_bert_nmt ctnmt_rs "${ctnmt[@]}" --bert-fusion input "${rate[@]}"; }
step_ctnmt() { train_bert_nmt ctnmt_all "${ctnmt[@]}" --bert-fusion switch "${distill[@]}" "${rate[@]}"; }
step_evaluate() {
    for system in ${SYSTEMS:-baseline ctnmt_ad ctnmt_ds ctnmt_rs ctnmt_all}; do
        evaluate_bert_nmt "$system" "$src" "$tgt"
    done
}

run_steps "prepare baseline ad ds rs ctnmt evaluate" "prepare baseline ad ds rs ctnmt evaluate" "$@"
