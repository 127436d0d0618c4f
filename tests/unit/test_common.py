"""Shared helpers: BERT resolution/loading and generate-output scoring."""
import pytest

from ptnmt_fairseq.common import scoring
from ptnmt_fairseq.common.bert import pretrained

GENERATE_OUTPUT = """S-1\tb
T-1\tthe cat sat
H-1\t-0.5\tthe cat sat
S-0\ta
T-0\tplay ##ing games
H-0\t-0.1\tplay ##ing game
"""


def test_packaged_minilm_resolves_and_loads_offline():
    path = pretrained.resolve_bert("all-MiniLM-L6-v2")
    assert path.endswith("model")
    tokenizer = pretrained.load_bert_tokenizer("all-MiniLM-L6-v2")
    assert tokenizer.tokenize("unaffable") == ["una", "##ffa", "##ble"]
    vocab = pretrained.bert_vocab_file("all-MiniLM-L6-v2").read_text().splitlines()
    assert len(vocab) == 30522 and vocab[103] == "[MASK]"


def test_missing_local_bert_names_the_option(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--source-bert .*no such directory"):
        pretrained.resolve_bert(str(tmp_path / "nope"), option="--source-bert")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        pretrained.resolve_bert(str(tmp_path / "empty"))


def test_uncached_hub_name_fails_offline_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="--target-bert bert-not-in-cache-xyz"):
        pretrained.load_bert_tokenizer("bert-not-in-cache-xyz", option="--target-bert")


def test_read_generate_output_orders_by_id():
    hyps, refs = scoring.read_generate_output(GENERATE_OUTPUT)
    assert refs == ["play ##ing games", "the cat sat"]
    assert hyps == ["play ##ing game", "the cat sat"]


def test_wordpiece_join_and_wer_by_hand():
    assert scoring.join_subwords("play ##ing game ##s", "wordpiece") == "playing games"
    # "playing game" vs "playing games": 1 substitution; "the cat sat" exact: 1 / 5 words
    assert scoring.score(GENERATE_OUTPUT, "wordpiece", "wer") == pytest.approx(20.0)
    assert scoring.word_error_rate(["a x c d"], ["a b c"]) == pytest.approx(200 / 3)


def test_partial_output_is_refused():
    with pytest.raises(ValueError, match=r"ids \[2\]"):
        scoring.read_generate_output(GENERATE_OUTPUT + "T-2\tlost\n")


def test_detokenized_scoring_reads_d_lines_with_13a_bleu_and_normalised_wer():
    import sacrebleu

    text = ("T-0\tHello, World!\nH-0\t-1.0\t▁Hello ▁World\nD-0\t-1.0\thello world\n"
            "T-1\tIt's fine.\nH-1\t-1.0\tx\nD-1\t-1.0\tIt's fine.\n")
    hyps, refs = scoring.read_generate_output(text, "D")
    assert hyps == ["hello world", "It's fine."] and refs == ["Hello, World!", "It's fine."]
    assert scoring.score(text, metric="wer", detokenized=True) == pytest.approx(0.0)
    assert scoring.score(text, metric="bleu", detokenized=True) == pytest.approx(
        sacrebleu.corpus_bleu(hyps, [refs]).score)
    # not normalised: "hello world" vs "Hello, World!" is 2 errors of the 4 reference words
    assert scoring.word_error_rate(hyps, refs) == pytest.approx(100 * 2 / 4)



SEPARATORS = ["\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]


def test_lines_split_at_newline_only():
    from ptnmt_fairseq.common.lines import split_lines

    text = "".join(f"a{sep}b\n" for sep in SEPARATORS) + "crlf\r\n\nlast"
    assert split_lines(text) == [f"a{sep}b" for sep in SEPARATORS] + ["crlf", "", "last"]
    assert split_lines("one\n") == ["one"] and split_lines("") == []


def test_misaligned_files_are_named(tmp_path):
    from ptnmt_fairseq.common.lines import read_aligned

    (tmp_path / "t.de").write_text("a\nb\n")
    (tmp_path / "t.en").write_text("a\u2028still a\nb\n")  # 2 lines, as wc -l counts
    assert read_aligned(tmp_path / "t.de", tmp_path / "t.en")[1] == ["a\u2028still a", "b"]
    (tmp_path / "t.en").write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match=r"t.de has 2 lines, .*t.en has 3 lines: .*not line-aligned"):
        read_aligned(tmp_path / "t.de", tmp_path / "t.en")


def test_generate_output_with_a_line_separator_in_a_hypothesis():
    hyps, refs = scoring.read_generate_output("T-0\tx\u2028y\nH-0\t-0.1\tx\u2028y\nT-1\tz\nH-1\t-0.2\tz\n")
    assert hyps == ["x\u2028y", "z"] and refs == ["x\u2028y", "z"]
