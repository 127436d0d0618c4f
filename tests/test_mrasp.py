"""mRASP / mRASP2 building blocks: random aligned substitution and its dictionaries."""
import numpy as np
import pytest

import ptnmt_fairseq  # noqa: F401
from ptnmt_fairseq.common.aligned_substitution import (
    AlignedDictionaries, random_aligned_substitution, read_word_dictionary, sentence_rng,
    substitute,
)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def dictionaries(tmp_path):
    write(tmp_path / "en-de.txt", "file\tDatei\nopen\töffnen\nopen\taufmachen\nred\trot\n")
    write(tmp_path / "en-fr.txt", "file\tfichier\nopen\touvrir\nred rouge\n")  # MUSE: a space
    return AlignedDictionaries([str(tmp_path / "en-de.txt"), str(tmp_path / "en-fr.txt")])


def test_only_dictionary_words_are_replaced_by_their_translations(dictionaries):
    words = "please open the red file now".split()
    allowed = {"open": {"öffnen", "aufmachen", "ouvrir"}, "red": {"rot", "rouge"},
               "file": {"Datei", "fichier"}}
    changed = 0
    for index in range(200):
        out, replaced, lang = random_aligned_substitution(
            words, "en", dictionaries, 0.5, sentence_rng(1, 1, index))
        assert lang in ("de", "fr") and len(out) == len(words)
        diff = [(w, o) for w, o in zip(words, out) if w != o]
        assert len(diff) == replaced
        for word, new in diff:
            assert new in allowed[word], (word, new)
        # one language per sentence
        assert all(new in {"Datei", "öffnen", "aufmachen", "rot"} for _, new in diff) or \
            all(new in {"fichier", "ouvrir", "rouge"} for _, new in diff)
        changed += replaced
    assert changed > 0


@pytest.mark.parametrize("prob", [0.1, 0.3, 0.8])
def test_substitution_rate_matches_the_probability(prob):
    table = {f"w{i}": [f"t{i}"] for i in range(50)}
    words = [f"w{i}" for i in range(50)] + ["unknown"] * 50
    replaced = sum(substitute(words, table, prob, sentence_rng(7, 1, i))[1] for i in range(400))
    assert abs(replaced / (50 * 400) - prob) < 0.015


def test_same_seed_same_output_other_epoch_other_output(dictionaries):
    words = ("open the red file " * 10).split()

    def run(seed, epoch):
        return [random_aligned_substitution(words, "en", dictionaries, 0.3,
                                            sentence_rng(seed, epoch, i))[0] for i in range(20)]

    assert run(1, 1) == run(1, 1)
    assert run(1, 1) != run(1, 2) and run(1, 1) != run(2, 1)


def test_capitalised_words_and_punctuation_keep_their_shape():
    table = {"file": ["datei"]}
    out, replaced = substitute(["File,", "(file)"], table, 1.0, sentence_rng(0, 0, 0))
    assert out == ["Datei,", "(datei)"] and replaced == 2


def test_no_dictionary_for_the_language_leaves_the_sentence(dictionaries):
    out, replaced, lang = random_aligned_substitution(["Datei"], "de", dictionaries, 1.0,
                                                      sentence_rng(0, 0, 0))
    assert out == ["Datei"] and replaced == 0 and lang == ""


@pytest.mark.parametrize("line", ["file", "file\tDatei\textra", "\tDatei", "a b c"])
def test_malformed_dictionary_line_is_named(tmp_path, line):
    path = write(tmp_path / "en-de.txt", f"open\töffnen\n\n{line}\n")
    with pytest.raises(ValueError, match=rf"en-de.txt:3: expected 'source<TAB>target'"):
        read_word_dictionary(path)


def test_dictionary_languages_come_from_the_name_or_a_prefix(tmp_path):
    path = write(tmp_path / "words.txt", "open\töffnen\n")
    with pytest.raises(ValueError, match="name it SRC-TGT.txt"):
        AlignedDictionaries([str(path)])
    assert AlignedDictionaries([f"en-de:{path}"]).target_languages("en") == ["de"]
