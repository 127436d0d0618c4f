# Shared shell library of the recipes. A recipe's run.sh sources it first:
#     source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# and gets strict mode, these globals, and the functions below.
#   recipe   the run.sh that sourced this file (its header comment block is its usage)
#   repo     the repository root
#   python   $PYTHON, default the repository's .venv; bin: its directory (fairseq-* live there)
#   plugin   the --user-dir of every fairseq command
#   work     the absolute WORKDIR, once the recipe calls set_workdir (or workdir)
set -euo pipefail

recipe="${BASH_SOURCE[1]}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
bin="$(dirname "$python")"
plugin="$repo/ptnmt_fairseq"
# BERTs come from the local HF cache or the packaged MiniLM: a recipe never downloads one.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

# --- usage, arguments, errors ------------------------------------------------------------------

print_usage() {  # the recipe's header comment block, from the line after the shebang
    awk 'NR > 1 { if (/^#/) print; else exit }' "$recipe"
}

exit_on_help() {  # ARGS...: -h or --help anywhere prints the usage and exits 0
    local arg
    for arg in "$@"; do
        case "$arg" in -h|--help) print_usage; exit 0 ;; esac
    done
}

require_workdir() {  # ARGS...: exit 2 with the usage on stderr unless a WORKDIR is given
    exit_on_help "$@"
    if [ "$#" -eq 0 ]; then print_usage >&2; exit 2; fi
}

workdir() {  # DIR: create DIR and print its absolute path (symlinks made there stay valid)
    mkdir -p "$1"
    (cd "$1" && pwd)
}

set_workdir() {  # WORKDIR [ARGS...]: work=<absolute WORKDIR>, after require_workdir; the caller
                 # shifts WORKDIR off its own arguments
    require_workdir "$@"
    work="$(workdir "$1")"
}

die() {  # MESSAGE...: print to stderr, exit 1
    echo "$*" >&2
    exit 1
}

tenth_of() {  # UPDATES: the default warm-up, a tenth of UPDATES, at least 1
    echo $(( $1 / 10 > 0 ? $1 / 10 : 1 ))
}

run_steps() {  # "DEFAULT STEPS" "ALL STEPS" [STEP...]: call step_<STEP> for each STEP in order;
               # no STEP runs the defaults, the single STEP `all` runs ALL STEPS
    local defaults="$1" every="$2" steps step
    shift 2
    if [ "$#" -eq 0 ]; then read -r -a steps <<< "$defaults"; else steps=("$@"); fi
    if [ "${steps[*]}" = all ]; then read -r -a steps <<< "$every"; fi
    for step in "${steps[@]}"; do  # checked before the first step runs: a typo costs no training
        declare -F "step_$step" > /dev/null || { echo "unknown step $step ($every all)" >&2; exit 2; }
    done
    for step in "${steps[@]}"; do
        echo "== $step"
        "step_$step"
    done
}

# --- data preparation (examples/data/) ---------------------------------------------------------

non_english_side() {  # SRC TGT: the other language of an en-X direction (gettext is English-centric)
    if [ "$1" = en ]; then echo "$2"; else echo "$1"; fi
}

link_gettext_direction() {  # RAW_DIR PAIR_DIR SRC TGT: gettext names its files by the
                            # English-centric pair (SPLIT.en-X.LANG); link them under the
                            # direction's names, PAIR_DIR/SPLIT.SRC-TGT.LANG
    local raw="$1" pair="$2" src="$3" tgt="$4" split lang other
    other="$(non_english_side "$src" "$tgt")"
    mkdir -p "$pair"
    for split in train valid test; do
        for lang in "$src" "$tgt"; do
            ln -sf "$raw/$split.en-$other.$lang" "$pair/$split.$src-$tgt.$lang"
        done
    done
}

prepare_gettext() {  # RAW_DIR LANG...: en-LANG corpora from the gettext catalogs (MAX_TRAIN caps
                     # the training pairs), skipped when RAW_DIR already holds them
    local raw="$1"
    shift
    # gettext_corpus.py writes the multi-way test set after every pair: with it, the run finished
    if [ -f "$raw/test.multiway.en" ] && [ -f "$raw/test.en-${*: -1}.en" ]; then return; fi
    MAX_TRAIN="${MAX_TRAIN:-}" PYTHON="$python" bash "$repo/examples/data/prepare_gettext.sh" "$raw" "$@"
}

prepare_bert_source_pair() {  # SRC TGT SRC_BERT: the gettext SRC-TGT corpus in $work/pair, binarised
                              # into $work/bert-bin for translation_bert: the source with SRC_BERT's
                              # WordPiece (its ids are the BERT's), the target with TGT_VOCAB (default:
                              # a cased WordPiece vocabulary of 8000 learned on the training targets,
                              # $work/tgt-vocab, by examples/data/pretrain_bert.py: its tokenizer only
                              # matters, the one-step model is never used). Used by CTNMT and BERT-fused.
    local src="$1" tgt="$2" src_bert="$3" tgt_vocab="${TGT_VOCAB:-$work/tgt-vocab}"
    prepare_gettext "$work/raw" "$(non_english_side "$src" "$tgt")"
    link_gettext_direction "$work/raw" "$work/pair" "$src" "$tgt"
    if [ -z "${TGT_VOCAB:-}" ] && [ ! -f "$tgt_vocab/vocab.txt" ]; then
        "$python" "$repo/examples/data/pretrain_bert.py" "$work/pair/train.$src-$tgt.$tgt" \
            --out "$tgt_vocab" --vocab-size 8000 --steps 1 --layers 1 --hidden 32 --heads 2 \
            --intermediate 64 > "$work/tgt-vocab.log" 2>&1 \
            || die "learning the target vocabulary failed (see $work/tgt-vocab.log)"
    fi
    [ -f "$work/bert-bin/train.$src-$tgt.$tgt.bin" ] || PYTHON="$python" bash \
        "$repo/examples/data/bert_binarize.sh" "$work/pair" "$src-$tgt" "$src" "$tgt" "$src_bert" \
        "$tgt_vocab" "$work/bert-bin"
}

# The CPU-sized Transformer of the CTNMT and BERT-fused recipes, every system alike (ARCH_DIMS)
bert_nmt_arch_dims="--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --decoder-attention-heads 4 --encoder-normalize-before --decoder-normalize-before"

train_bert_nmt() {  # SYSTEM OPTIONS...: train_logged into $work/SYSTEM on $work/bert-bin
                    # (translation_bert): ARCH_DIMS, label smoothing 0.1, Adam (0.9, 0.98), LR with
                    # inverse_sqrt over WARMUP updates, MAX_TOKENS, the MAX_UPDATE/MINUTES budget;
                    # OPTIONS come after these, so a system may replace any of them
    local system="$1" dims
    shift
    read -r -a dims <<< "${ARCH_DIMS-$bert_nmt_arch_dims}"
    # shellcheck disable=SC2046
    train_logged "$work/$system" "$work/bert-bin" --task translation_bert \
        --criterion label_smoothed_cross_entropy --lr-scheduler inverse_sqrt "${dims[@]}" \
        --share-decoder-input-output-embed --label-smoothing 0.1 --optimizer adam \
        --adam-betas '(0.9,0.98)' --lr "${LR:-2e-3}" --warmup-updates "${WARMUP:-200}" \
        --max-tokens "${MAX_TOKENS:-2048}" --log-interval 50 \
        $(budget_options "${MAX_UPDATE:-600}" "${MINUTES:-}") "$@"
}

evaluate_bert_nmt() {  # SYSTEM SRC TGT: decode the test split of $work/bert-bin with
                       # $work/SYSTEM/checkpoint_best.pt into $work/SYSTEM/test.gen (BEAM, LENPEN) and
                       # print its BLEU against the raw targets (score_wordpiece); no decoding
                       # when the system was not trained, or test.gen is newer than its checkpoint
    local out="$work/$1/test.gen"
    [ -f "$work/$1/checkpoint_best.pt" ] || return 0
    [ "$out" -nt "$work/$1/checkpoint_best.pt" ] || generate_logged "$out" "$work/bert-bin" --task translation_bert \
        --path "$work/$1/checkpoint_best.pt" --gen-subset test --beam "${BEAM:-5}" \
        --lenpen "${LENPEN:-1.0}" --max-tokens 4000
    echo -n "$1 test: "
    score_wordpiece "$out" "$work/pair/test.$2-$3.$3" "${TGT_VOCAB:-$work/tgt-vocab}"
}

declare -gA freedict_code=([de]=deu [fr]=fra)  # FreeDict has no Romanian: RAS never produces it

prepare_freedict() {  # DICT_DIR LANG...: FreeDict word pairs DICT_DIR/en-LANG.txt and LANG-en.txt
                      # (the RAS dictionaries) for the LANGs FreeDict has, skipping those present
    local dicts="$1" missing=() lang code
    shift
    for lang in "$@"; do
        code="${freedict_code[$lang]:-}"
        [ -n "$code" ] || continue
        [ -f "$dicts/en-$lang.txt" ] || missing+=("eng-$code")
        [ -f "$dicts/$lang-en.txt" ] || missing+=("$code-eng")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        PYTHON="$python" bash "$repo/examples/data/prepare_freedict.sh" "$dicts" "${missing[@]}"
    fi
}

prepare_multilingual() {  # RAW_DIR DATA_DIR DICT_DIR LANG...: gettext en-LANG pairs, both
                          # directions with a joint sentencepiece (VOCAB_SIZE) and a dict.txt
                          # holding LANG_TOK_XX of every LANG, and the FreeDict dictionaries
    local raw="$1" data="$2" dicts="$3" lang
    shift 3
    prepare_gettext "$raw" "$@"
    if [ ! -f "$data/dict.txt" ]; then
        "$python" "$repo/examples/data/prepare_multilingual.py" "$raw" "$data" --langs "$@" \
            --vocab-size "${VOCAB_SIZE:-4000}"
    fi
    prepare_freedict "$dicts" "$@"
    for lang in "$@"; do
        echo "en-$lang: $(wc -l < "$data/train.en-$lang.en") train, $(wc -l < "$data/test.en-$lang.en") test pairs"
    done
}

line_counts() {  # DIR: `wc -l` of DIR's *.txt files on one line
    (cd "$1" && wc -l ./*.txt | tr '\n' ' ')
}

comma_list() {  # WORDS...: the words joined by commas (e.g. --ras-dicts takes one argument)
    local IFS=,
    echo "$*"
}

test_subset() {  # N: the name of the decoded test subset: tN (the first N lines), or test (N=all)
    if [ "$1" = all ]; then echo test; else echo "t$1"; fi
}

first_lines_subset() {  # DATA_DIR N SRC-TGT: the first N lines of test.SRC-TGT.* as the subset
                        # tN.SRC-TGT.* (CPU-sized decoding); N=all: the whole test split
    local data="$1" n="$2" pair="$3" lang
    [ "$n" = all ] && return
    for lang in "${pair%-*}" "${pair#*-}"; do
        [ -f "$data/t$n.$pair.$lang" ] || head -n "$n" "$data/test.$pair.$lang" > "$data/t$n.$pair.$lang"
    done
}

# --- training, decoding, scoring ---------------------------------------------------------------

train_logged() {  # SAVE_DIR DATA_DIR OPTIONS...: fairseq-train on the CPU into SAVE_DIR, then
                  # TRAIN_EXTRA (word-split; it comes last, so it wins). The whole log is appended
                  # to SAVE_DIR/train.log (fairseq-train resumes from checkpoint_last.pt); the
                  # console gets the train/valid summaries.
    local save="$1"
    shift
    mkdir -p "$save"
    # shellcheck disable=SC2086
    "$bin/fairseq-train" "$@" --cpu --user-dir "$plugin" --save-dir "$save" --no-epoch-checkpoints \
        --no-progress-bar --log-format simple --seed 1 --num-workers 0 ${TRAIN_EXTRA:-} 2>&1 \
        | tee -a "$save/train.log" \
        | grep -E "trainable|\| train \||\| valid \||done training|Error" \
        | sed -E 's/^.*\| (train|valid) \|/\1 |/' || true
    [ -f "$save/checkpoint_best.pt" ] || die "$(basename "$save"): training failed (see $save/train.log)"
}

budget_options() {  # UPDATES [MINUTES]: fairseq-train options for a budget of UPDATES updates or,
                    # when MINUTES is given, MINUTES of training wall-clock time (whichever ends
                    # first: --stop-time-hours), so that systems of unequal cost get equal time
    echo "--max-update $1"
    if [ -n "${2:-}" ]; then echo "--stop-time-hours $(awk -v m="$2" 'BEGIN { print m / 60 }')"; fi
}

average_checkpoints() {  # SAVE_DIR N: the mean of SAVE_DIR's N newest update checkpoints
                         # (checkpoint_E_U.pt, --save-interval-updates) into SAVE_DIR/checkpoint_avg.pt
                         # (python -m ptnmt_fairseq.average_checkpoints, fairseq's semantics)
    "$python" -m ptnmt_fairseq.average_checkpoints --inputs "$1" --num-update-checkpoints "$2" \
        --output "$1/checkpoint_avg.pt" > "$1/average.log" 2>&1 \
        || die "averaging $1 failed (see $1/average.log)"
}

average_options() {  # fairseq-train options that keep the AVERAGE newest update checkpoints, one
                     # every SAVE_INTERVAL updates (default 100); nothing without AVERAGE
    if [ -n "${AVERAGE:-}" ]; then
        echo "--save-interval-updates ${SAVE_INTERVAL:-100} --keep-interval-updates $AVERAGE"
    fi
}

decoded_checkpoint() {  # MODEL_DIR [NAME]: the checkpoint to decode: with AVERAGE=N, the average
                        # of the N newest update checkpoints (made once), else NAME (default
                        # checkpoint_best.pt)
    if [ -n "${AVERAGE:-}" ]; then
        [ -f "$1/checkpoint_avg.pt" ] || average_checkpoints "$1" "$AVERAGE"
        echo "$1/checkpoint_avg.pt"
    else
        echo "$1/${2:-checkpoint_best.pt}"
    fi
}

# The CPU-sized many-to-many Transformer of the mRASP and mRASP2 recipes (ARCH_ARGS replaces it)
small_multilingual_arch="--arch transformer --encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 128 --decoder-embed-dim 128 --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512 --encoder-attention-heads 4 --decoder-attention-heads 4 --share-all-embeddings"

train_multilingual() {  # TASK SAVE_DIR DATA_DIR OPTIONS...: train_logged with TASK (translation_
                        # multi_langtok or mRASP2's translation_multi_langtok_aa), ARCH_ARGS, label
                        # smoothing 0.1, Adam, inverse_sqrt, MAX_TOKENS, VALID_STEPS
    local task="$1" save="$2" data="$3"
    shift 3
    # shellcheck disable=SC2086
    train_logged "$save" "$data" --task "$task" ${ARCH_ARGS:-$small_multilingual_arch} \
        --label-smoothing 0.1 --optimizer adam --adam-betas '(0.9,0.98)' --lr-scheduler inverse_sqrt \
        --max-tokens "${MAX_TOKENS:-2000}" --max-valid-steps "${VALID_STEPS:-10}" --log-interval 50 \
        $(average_options) "$@"
}

generate_logged() {  # OUT.gen DATA_DIR OPTIONS...: fairseq-generate on the CPU into OUT.gen, then
                     # GEN_EXTRA (word-split); its log is OUT.log
    local out="$1" log="${1%.gen}.log"
    shift
    # shellcheck disable=SC2086
    "$bin/fairseq-generate" "$@" --user-dir "$plugin" --cpu ${GEN_EXTRA:-} > "$out" 2> "$log" \
        || die "fairseq-generate into $out failed (see $log)"
}

score() {  # GENERATE_OUTPUT REFERENCES SCORING_OPTIONS...: print the project scorer's line, e.g.
           # "BLEU = x (sacreBLEU 13a, case-sensitive, N sentences, raw references REFERENCES)",
           # against the raw REFERENCES (a text file, line i = sentence id i, or a speech manifest
           # .tsv with --reference-column), never fairseq's T- lines (rebuilt from ids: <<unk>>,
           # NFKC). It refuses output that does not cover every reference line; its stderr goes
           # to <output>.score.log
    local gen="$1" refs="$2" log="${1%.*}.score.log"
    shift 2
    "$python" -m ptnmt_fairseq.common.scoring "$gen" --references "$refs" "$@" 2> "$log" \
        || die "scoring $gen failed (see $log)"
}

bert_references() {  # RAW BERT OUT: OUT = BERT's basic tokenisation of the raw references RAW
                     # (its normaliser and punctuation split, no WordPiece, so no [UNK]): what
                     # WordPiece hypotheses are scored against, with --tokenize none
    "$python" "$repo/examples/data/bert_tokenize.py" --bert "$2" "$1" "$3" --basic 2> /dev/null \
        || die "cannot tokenise $1 with $2"
}

score_wordpiece() {  # GENERATE_OUTPUT RAW BERT: tokenised BLEU of WordPiece H- lines (## joined)
                     # against RAW in BERT's basic tokenisation (written beside RAW as *.basic)
    bert_references "$2" "$3" "$2.basic"
    score "$1" "$2.basic" --subword wordpiece --tokenize none
}

decode_multilingual() {  # DATA_DIR MODEL_DIR SRC-TGT N [LABEL]: decode the first N test lines of
                         # SRC-TGT (N=all: the whole split) with MODEL_DIR's decoded_checkpoint into
                         # MODEL_DIR/<subset>.SRC-TGT.gen (subset tN or test) and print its
                         # case-sensitive sacreBLEU (13a) of the detokenised D- lines against the raw
                         # target text of the same lines, DATA_DIR/<subset>.SRC-TGT.TGT (the target
                         # language token is the decoder's first input); DECODE_TASK: the task
                         # (default translation_multi_langtok; MASS checkpoints: mass)
    local data="$1" model="$2" pair="$3" n="$4" label="${5:-}" subset checkpoint
    subset="$(test_subset "$n")"
    checkpoint="$(decoded_checkpoint "$model")"  # its own line: a failed average stops the recipe
    local out="$model/$subset.$pair.gen"
    first_lines_subset "$data" "$n" "$pair"
    generate_logged "$out" "$data" --task "${DECODE_TASK:-translation_multi_langtok}" -s "${pair%-*}" -t "${pair#*-}" \
        --gen-subset "$subset" --path "$checkpoint" --beam "${BEAM:-5}" --max-tokens 4000
    echo -n "$(basename "$model") $pair$label: "
    score "$out" "$data/$subset.$pair.${pair#*-}" --detokenized
}

# --- the speech family (XSTNet, Chimera) ------------------------------------------------------

prepare_speech() {  # DATA_DIR SRC TGT: the gettext en-X corpus in $work/raw, espeak-ng speech of
                    # the first MAX_SPEECH train / MAX_EVAL valid and test lines (default 2000,
                    # 200) as speech-to-text manifests in DATA_DIR, one joint sentencepiece
                    # (VOCAB_SIZE, default 1000) with dict.txt and config.yaml, and the external
                    # MT pairs DATA_DIR/train_mt.tsv (train pairs whose source is not a transcript)
    local data="$1" src="$2" tgt="$3" lang_other split n lang
    lang_other="$(non_english_side "$src" "$tgt")"
    prepare_gettext "$work/raw" "$lang_other"
    if [ ! -f "$data/test.tsv" ]; then
        mkdir -p "$work/speech_text"
        for split in train valid test; do
            n=$([ "$split" = train ] && echo "${MAX_SPEECH:-2000}" || echo "${MAX_EVAL:-200}")
            for lang in en "$lang_other"; do
                head -n "$n" "$work/raw/$split.en-$lang_other.$lang" > "$work/speech_text/$split.en-$lang_other.$lang"
            done
        done
        PYTHON="$python" bash "$repo/examples/data/synthesize_speech.sh" "$work/speech_text" "$src" "$tgt" "$data"
    fi
    [ -f "$data/train_mt.tsv" ] || \
        "$python" "$repo/examples/data/prepare_speech_vocab.py" "$data" --vocab-size "${VOCAB_SIZE:-1000}" \
            --external-mt "$work/raw/train.en-$lang_other" --src "$src" --tgt "$tgt"
    echo "triples: $(( $(wc -l < "$data/train.tsv") - 1 )) train, $(( $(wc -l < "$data/valid.tsv") - 1 )) valid," \
         "$(( $(wc -l < "$data/test.tsv") - 1 )) test; external MT: $(( $(wc -l < "$data/train_mt.tsv") - 1 )) pairs"
}

pretrain_w2v() {  # DATA_DIR W2V_DIR: a small wav2vec 2.0 in W2V_DIR (examples/data/
                  # pretrain_wav2vec2.sh, W2V_UPDATE updates, default 200, or W2V_MINUTES of
                  # them, warm-up W2V_WARMUP), unless W2V_PATH is given or SPEECH_FRONTEND=fbank
    local data="$1" w2v_dir="$2"
    if [ "${SPEECH_FRONTEND:-wav2vec2}" = fbank ]; then echo "SPEECH_FRONTEND=fbank: no wav2vec 2.0"; return; fi
    if [ -n "${W2V_PATH:-}" ]; then
        [ -f "$W2V_PATH" ] || die "W2V_PATH=$W2V_PATH does not exist"
        echo "using $W2V_PATH"; return
    fi
    [ -f "$w2v_dir/checkpoint_best.pt" ] && { echo "using $w2v_dir/checkpoint_best.pt"; return; }
    local budget=(MAX_UPDATE="${W2V_UPDATE:-200}")
    if [ -n "${W2V_MINUTES:-}" ]; then  # a wall-clock budget: the updates are what it reaches
        budget=(MAX_UPDATE=100000000 WARMUP="${W2V_WARMUP:-500}"
                EXTRA="${EXTRA:-} --stop-time-hours $(awk -v m="$W2V_MINUTES" 'BEGIN { print m / 60 }')")
    fi
    env "${budget[@]}" PYTHON="$python" bash "$repo/examples/data/pretrain_wav2vec2.sh" \
        "$data" "$w2v_dir" | grep -E "valid on|done training|Error" || true
    [ -f "$w2v_dir/checkpoint_best.pt" ] || die "wav2vec 2.0 pre-training failed (see $w2v_dir/train.log)"
}

set_speech_frontend() {  # W2V_CHECKPOINT: the array speech_frontend = the model's front-end options
                         # (SPEECH_FRONTEND=fbank: filterbanks, else wav2vec 2.0 from
                         # W2V_CHECKPOINT, frozen with FREEZE_W2V=1)
    if [ "${SPEECH_FRONTEND:-wav2vec2}" = fbank ]; then
        speech_frontend=(--speech-frontend fbank)
    else
        speech_frontend=(--w2v-path "$1")
        if [ "${FREEZE_W2V:-0}" = 1 ]; then speech_frontend+=(--freeze-w2v); fi
    fi
}

require_speech_frontend() {  # W2V_CHECKPOINT: stop unless the front-end's checkpoint is there
    if [ "${SPEECH_FRONTEND:-wav2vec2}" != fbank ] && [ ! -f "$1" ]; then
        die "no wav2vec 2.0 checkpoint $1: run the w2v step, set W2V_PATH or SPEECH_FRONTEND=fbank"
    fi
}

score_speech_task() {  # GEN TASK DATA_DIR: the D- lines against the raw test manifest
                       # DATA_DIR/test.tsv: case-sensitive sacreBLEU against tgt_text (st, mt),
                       # WER against src_text (asr)
    if [ "$2" = asr ]; then
        score "$1" "$3/test.tsv" --reference-column src_text --detokenized --metric wer
    else
        score "$1" "$3/test.tsv" --reference-column tgt_text --detokenized
    fi
}
