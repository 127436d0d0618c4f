"""Shared helpers: BERT resolution/loading and generate-output scoring."""
import json

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


def test_hypotheses_by_id_and_the_raw_references(tmp_path):
    assert scoring.hypotheses_by_id(GENERATE_OUTPUT) == {1: "the cat sat", 0: "play ##ing game"}
    raw = tmp_path / "test.en"
    raw.write_text("playing games\nthe cat sat\n")
    assert scoring.read_references(raw) == ["playing games", "the cat sat"]
    manifest = tmp_path / "test.tsv"
    manifest.write_text("id\tsrc_text\ttgt_text\nu0\tbonjour\thello\n")
    assert scoring.read_references(manifest) == ["hello"]
    assert scoring.read_references(manifest, "src_text") == ["bonjour"]


def test_wordpiece_join_and_wer_by_hand():
    assert scoring.join_subwords("play ##ing game ##s", "wordpiece") == "playing games"
    # "playing game" vs "playing games": 1 substitution; "the cat sat" exact: 1 / 5 words
    refs = ["playing games", "the cat sat"]
    assert scoring.score(GENERATE_OUTPUT, refs, "wordpiece", "wer") == pytest.approx(20.0)
    assert scoring.word_error_rate(["a x c d"], ["a b c"]) == pytest.approx(200 / 3)


def test_partial_output_is_refused():
    with pytest.raises(ValueError, match=r"2 hypotheses for 3 references \(missing ids \[2\]"):
        scoring.score(GENERATE_OUTPUT, ["a", "b", "c"], "wordpiece")


def test_bleu_is_against_the_raw_references_not_the_t_lines():
    import sacrebleu

    # T- lines rebuilt from dictionary ids: "é" was not in the vocabulary
    text = ("T-0\tun caf<<unk>> au lait pour moi\nH-0\t-1.0\tx\n"
            "D-0\t-1.0\tun café au lait pour moi\n"
            "T-1\tIt's fine, thank you.\nH-1\t-1.0\tx\nD-1\t-1.0\tIt's fine, thank you!\n")
    raw = ["un café au lait pour moi", "It's fine, thank you."]
    hyps = ["un café au lait pour moi", "It's fine, thank you!"]
    bleu = scoring.score(text, raw, detokenized=True)
    assert bleu == pytest.approx(sacrebleu.corpus_bleu(hyps, [raw]).score)
    damaged = sacrebleu.corpus_bleu(hyps, [["un caf<<unk>> au lait pour moi", raw[1]]]).score
    assert bleu > damaged + 10
    assert scoring.score(text, raw, metric="wer", detokenized=True) == pytest.approx(0.0)
    upper = ["UN CAFÉ au lait pour moi", raw[1]]
    assert scoring.score(text, upper, detokenized=True, lowercase=True) == pytest.approx(bleu)
    assert scoring.score(text, upper, detokenized=True) < bleu


def test_scoring_cli_names_the_tokenisation_and_the_references(tmp_path, capsys):
    (tmp_path / "gen.txt").write_text("H-0\t-1\tx\nD-0\t-1\tThe cat sat on the mat.\n")
    (tmp_path / "ref.txt").write_text("The cat sat on the mat.\n")
    scoring.main([str(tmp_path / "gen.txt"), "--references", str(tmp_path / "ref.txt"),
                  "--detokenized"])
    out = capsys.readouterr().out
    assert out.startswith("BLEU = 100.00 (sacreBLEU tokenize=13a, case-sensitive, 1 sentences, "
                          "raw references ")


def test_wordpiece_hypotheses_against_basic_tokenised_references(tmp_path):
    import subprocess
    import sys

    from conftest import BASE_ENV, REPO

    raw, basic = tmp_path / "test.en", tmp_path / "test.basic.en"
    raw.write_text("The data-modifying step, naïvely!\nThe --no-sync option is safe\n")
    subprocess.run([sys.executable, REPO / "examples/data/bert_tokenize.py", "--bert",
                    "all-MiniLM-L6-v2", raw, basic, "--basic"], check=True, env=BASE_ENV)
    assert basic.read_text().split("\n")[0] == "the data - modifying step , naively !"
    # the references themselves, as WordPiece hypotheses: a perfect score, which 13a on the raw
    # text cannot give (punctuation inside words, stripped accents)
    text = ("H-0\t-1\tthe data - mod ##ifying step , naive ##ly !\n"
            "H-1\t-1\tthe - - no - sync option is safe\n")
    refs = scoring.read_references(basic)
    assert scoring.score(text, refs, "wordpiece", tokenize="none") == pytest.approx(100.0)
    assert scoring.score(text, scoring.read_references(raw), "wordpiece", lowercase=True) < 60


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
    hyps = scoring.hypotheses_by_id("T-0\tx\u2028y\nH-0\t-0.1\tx\u2028y\nT-1\tz\nH-1\t-0.2\tz\n")
    assert hyps == {0: "x\u2028y", 1: "z"}


def _generate_output(hypotheses):
    return "".join(f"D-{i}\t-0.5\t{h}\n" for i, h in enumerate(hypotheses))


def _paired_test_set():
    """60 references; the "good" system is exact, the "cut" baseline drops 1 to 4 final words."""
    import random

    rng = random.Random(0)
    words = "the cat sat on a mat with big red dog and blue bird near our house".split()
    refs = [" ".join(rng.choice(words) for _ in range(8)) for _ in range(60)]
    cut = [" ".join(r.split()[:8 - rng.randint(1, 4)]) for r in refs]
    return refs, _generate_output(refs), _generate_output(cut)


def test_paired_bootstrap_is_sacrebleus_against_the_raw_references(tmp_path, capsys):
    import sacrebleu

    refs, good, cut = _paired_test_set()
    hyps = {name: scoring.ordered_hypotheses(text, refs, detokenized=True)
            for name, text in (("good", good), ("cut", cut))}
    result = scoring.paired_bootstrap(hyps["cut"], hyps["good"], refs)
    baseline_bleu = sacrebleu.corpus_bleu(hyps["cut"], [refs]).score
    assert result["system_bleu"] == pytest.approx(100.0)
    assert result["baseline_bleu"] == pytest.approx(baseline_bleu, abs=0.01)
    assert result["delta"] == pytest.approx(100.0 - baseline_bleu, abs=0.01)
    assert result["p"] < 0.01  # exact on every sentence: never due to chance
    low, high = result["baseline_ci95"]
    assert low < baseline_bleu < high and high - low > 1  # resampled: a real interval
    # the same test through the CLI, as a user runs it
    (tmp_path / "sys.gen").write_text(good)
    (tmp_path / "base.gen").write_text(cut)
    (tmp_path / "ref.txt").write_text("\n".join(refs) + "\n")
    scoring.main([str(tmp_path / "sys.gen"), "--references", str(tmp_path / "ref.txt"),
                  "--detokenized", "--paired-bs", str(tmp_path / "base.gen")])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("BLEU = 100.00")
    assert json.loads(printed[1]) == result


def test_paired_bootstrap_of_identical_outputs_is_no_difference():
    refs, _good, cut = _paired_test_set()
    hyps = scoring.ordered_hypotheses(cut, refs, detokenized=True)
    result = scoring.paired_bootstrap(hyps, hyps, refs)
    assert result["delta"] == 0 and result["p"] == 1.0
    # different outputs, both BLEU 0 on every resample: no difference either
    zero = scoring.paired_bootstrap(["x y"] * 60, ["z w"] * 60, refs)
    assert zero["delta"] == 0 and zero["p"] == 1.0
    with pytest.raises(ValueError, match="60 baseline and 59 system hypotheses for 60"):
        scoring.paired_bootstrap(hyps, hyps[:-1], refs)
