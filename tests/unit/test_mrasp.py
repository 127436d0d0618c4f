"""mRASP / mRASP2 building blocks: random aligned substitution and its dictionaries, the
multilingual task's data, the contrastive loss and criterion, aligned augmentation, retrieval."""
from collections import Counter

import pytest

import ptnmt_fairseq  # noqa: F401
from ptnmt_fairseq.common.multilingual.ras import (
    AlignedDictionaries, EpochSubstitutions, read_word_dictionary,
)
from conftest import LEXICON, PLUGIN, build_task, multi_task, write

TINY_TRANSFORMER = ["--arch", "transformer", "--encoder-layers", "1", "--decoder-layers", "1",
                    "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
                    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
                    "--share-all-embeddings"]


@pytest.fixture
def dictionaries(tmp_path):
    write(tmp_path / "en-de.txt", "file\tDatei\nopen\töffnen\nopen\taufmachen\nred\trot\n")
    write(tmp_path / "en-fr.txt", "file\tfichier\nopen\touvrir\nred rouge\n")  # MUSE: a space
    return AlignedDictionaries([str(tmp_path / "en-de.txt"), str(tmp_path / "en-fr.txt")])


def substituted(ras, sentences, epoch=1):
    """Each sentence with ``epoch``'s substitutions applied, as training reads them."""
    out = [list(words) for words in sentences]
    for index, words in enumerate(out):
        for position, word in ras.changes(epoch, index):
            words[position] = word
    return out


def test_only_dictionary_words_are_replaced_by_their_translations(dictionaries):
    words = "please open the red file now".split()
    allowed = {"open": {"öffnen", "aufmachen", "ouvrir"}, "red": {"rot", "rouge"},
               "file": {"Datei", "fichier"}}
    ras = EpochSubstitutions([words] * 200, "en", dictionaries, 0.5, seed=1, name="t")
    changed = 0
    for out in substituted(ras, [words] * 200):
        assert len(out) == len(words)
        diff = [(w, o) for w, o in zip(words, out) if w != o]
        for word, new in diff:
            assert new in allowed[word], (word, new)
        # one language per sentence
        assert all(new in {"Datei", "öffnen", "aufmachen", "rot"} for _, new in diff) or \
            all(new in {"fichier", "ouvrir", "rouge"} for _, new in diff)
        changed += len(diff)
    assert changed == ras.replaced > 0


@pytest.mark.parametrize("options", [2, 3, 4])
def test_translation_is_drawn_uniformly_among_the_entries(tmp_path, options):
    write(tmp_path / "en-xx.txt", "".join(f"word\tt{k}\n" for k in range(options)))
    dictionaries = AlignedDictionaries([str(tmp_path / "en-xx.txt")])
    sentences = [["word"] * 10] * 600
    ras = EpochSubstitutions(sentences, "en", dictionaries, 1.0, seed=5, name="t")
    counts = Counter(w for words in substituted(ras, sentences) for w in words)
    assert set(counts) == {f"t{k}" for k in range(options)}
    for k in range(options):
        assert abs(counts[f"t{k}"] / 6000 - 1 / options) < 0.02


def test_same_seed_same_output_other_epoch_other_output(dictionaries):
    sentences = [("open the red file " * 10).split()] * 20

    def run(seed, epoch):
        ras = EpochSubstitutions(sentences, "en", dictionaries, 0.3, seed=seed, name="t")
        return substituted(ras, sentences, epoch)

    assert run(1, 1) == run(1, 1)
    assert run(1, 1) != run(1, 2) and run(1, 1) != run(2, 1)


def test_capitalised_words_and_punctuation_keep_their_shape(tmp_path):
    write(tmp_path / "en-de.txt", "file\tdatei\n")
    dictionaries = AlignedDictionaries([str(tmp_path / "en-de.txt")])
    ras = EpochSubstitutions([["File,", "(file)"]], "en", dictionaries, 1.0, seed=0, name="t")
    assert substituted(ras, [["File,", "(file)"]]) == [["Datei,", "(datei)"]]
    assert ras.replaced == 2


def test_no_dictionary_for_the_language_leaves_the_sentence(dictionaries):
    ras = EpochSubstitutions([["Datei"]], "de", dictionaries, 1.0, seed=0, name="t")
    assert substituted(ras, [["Datei"]]) == [["Datei"]] and ras.replaced == 0


@pytest.mark.parametrize("line", ["file", "file\tDatei\textra", "\tDatei", "a b c"])
def test_malformed_dictionary_line_is_named(tmp_path, line):
    path = write(tmp_path / "en-de.txt", f"open\töffnen\n\n{line}\n")
    with pytest.raises(ValueError, match=r"en-de.txt:3: expected 'source<TAB>target'"):
        read_word_dictionary(path)


def test_dictionary_languages_come_from_the_name_or_a_prefix(tmp_path):
    path = write(tmp_path / "words.txt", "open\töffnen\n")
    with pytest.raises(ValueError, match="name it SRC-TGT.txt"):
        AlignedDictionaries([str(path)])
    assert AlignedDictionaries([f"en-de:{path}"]).target_languages("en") == ["de"]


def test_language_tokens_on_source_and_decoder_input(multi_data):
    data, _ = multi_data
    task = multi_task(data, "--lang-pairs", "en-de,fr-en")
    task.load_dataset("valid")
    d = task.dictionary
    for direction in task.dataset("valid").datasets:
        sample = direction.collater([direction[i] for i in range(4)])
        src_tag = d.index(f"LANG_TOK_{direction.src_lang.upper()}")
        tgt_tag = d.index(f"LANG_TOK_{direction.tgt_lang.upper()}")
        assert sample["net_input"]["src_tokens"][:, 0].eq(src_tag).all()
        assert sample["net_input"]["prev_output_tokens"][:, 0].eq(tgt_tag).all()
        target = sample["target"]
        assert not target.eq(src_tag).any() and not target.eq(tgt_tag).any()
        real = target.ne(d.pad())
        assert (sample["net_input"]["prev_output_tokens"][:, 1:][real[:, 1:]]
                == target[:, :-1][real[:, 1:]]).all()
        text = task.build_bpe(None).decode(d.string(target[0][real[0]][:-1]))
        assert text == direction.tgt_lines[int(sample["id"][0])]


def test_temperature_sampling_ratios_by_hand():
    from ptnmt_fairseq.common.multilingual.dataset import temperature_ratios

    assert temperature_ratios([100, 900], 1.0) == pytest.approx([0.1, 0.9])
    # T=2: sqrt(0.1) : sqrt(0.9) = 0.3162 : 0.9487 -> 0.25 : 0.75
    assert temperature_ratios([100, 900], 2.0) == pytest.approx([0.25, 0.75])
    assert temperature_ratios([100, 900], 1e9) == pytest.approx([0.5, 0.5])


def test_missing_language_token_and_misaligned_text_are_named(multi_data, tmp_path):
    import shutil

    data, _ = multi_data
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    (copy / "dict.txt").write_text("".join(l + "\n" for l in (copy / "dict.txt").read_text()
                                           .splitlines() if not l.startswith("LANG_TOK_FR")))
    task = multi_task(copy, "--lang-pairs", "en-fr")
    with pytest.raises(ValueError, match=r"LANG_TOK_FR is not in .*dict.txt .*valid.en-fr"):
        task.load_dataset("valid")
    (copy / "valid.en-de.de").write_text("nur eine Zeile\n")
    task = multi_task(copy, "--lang-pairs", "en-de")
    with pytest.raises(ValueError, match=r"valid.en-de.en has 10 lines, .*valid.en-de.de has 1 line: the files are not line-aligned"):
        task.load_dataset("valid")


def test_ras_in_the_training_data_is_seeded_per_epoch(multi_data):
    data, dicts = multi_data
    task = multi_task(data, "--lang-pairs", "en-de", "--ras-prob", "1.0",
                      "--ras-dicts", f"{dicts}/en-de.txt")
    task.load_dataset("train")
    direction = task.dataset("train").datasets[0]
    plain = [direction.src_lines[i].split() for i in range(10)]
    epoch1 = [direction.source_words(i) for i in range(10)]
    assert all(w == LEXICON[p][0] for s, r in zip(plain, epoch1) for p, w in zip(s, r))
    assert direction.replaced_words == sum(len(line.split()) for line in direction.src_lines)
    # the item's ids are those of the substituted words
    pieces = task.pieces.ids(epoch1[3])
    assert direction[3]["source"].tolist() == [direction.src_tag] + pieces + [task.dictionary.eos()]
    task.load_dataset("valid")  # never substituted
    valid = task.dataset("valid").datasets[0]
    assert valid.source_words(0) == valid.src_lines[0].split()

    half = multi_task(data, "--lang-pairs", "en-de", "--ras-prob", "0.5",
                      "--ras-dicts", f"{dicts}/en-de.txt")
    half.load_dataset("train")
    d = half.dataset("train").datasets[0]
    first = [d.source_words(i) for i in range(30)]
    assert first == [d.source_words(i) for i in range(30)]  # same seed and epoch
    d.set_epoch(2)
    assert first != [d.source_words(i) for i in range(30)]
    # every item's ids are its substituted words' pieces (the corpus-wide splice is exact)
    eos = task.dictionary.eos()
    for i in range(len(d)):
        assert d[i]["source"].tolist() == [d.src_tag] + half.pieces.ids(d.source_words(i)) + [eos]
    assert 0 < d.replaced_words < sum(len(line.split()) for line in d.src_lines)


def test_contrastive_loss_matches_hand_computation():
    import math

    import torch

    from ptnmt_fairseq.common.contrastive import contrastive_loss

    anchors = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    positives = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    # cosines: row 0 -> (1, 1/sqrt2); row 1 -> (0, 1/sqrt2); tau = 0.1
    c = 1 / math.sqrt(2)
    row0 = -math.log(math.exp(1 / 0.1) / (math.exp(1 / 0.1) + math.exp(c / 0.1)))
    row1 = -math.log(math.exp(c / 0.1) / (math.exp(0 / 0.1) + math.exp(c / 0.1)))
    assert contrastive_loss(anchors, positives, 0.1).item() == pytest.approx(row0 + row1, rel=1e-5)
    # temperature 1 by hand too
    row0 = -math.log(math.exp(1) / (math.exp(1) + math.exp(c)))
    row1 = -math.log(math.exp(c) / (1 + math.exp(c)))
    assert contrastive_loss(anchors, positives, 1.0).item() == pytest.approx(row0 + row1, rel=1e-5)


def test_masked_mean_ignores_padding():
    import torch

    from ptnmt_fairseq.common.modeling import masked_mean

    states = torch.tensor([[[1.0], [10.0]], [[3.0], [99.0]], [[5.0], [99.0]]])  # T=3, B=2, C=1
    padding = torch.tensor([[False, False, False], [False, True, True]])
    assert masked_mean(states, padding).squeeze(-1).tolist() == [3.0, 10.0]
    assert masked_mean(states, None).squeeze(-1).tolist() == pytest.approx([3.0, (10 + 99 + 99) / 3])


def test_contrastive_criterion_adds_lambda_times_the_loss_of_the_target_as_source(multi_data):
    import torch

    from ptnmt_fairseq.common.contrastive import contrastive_loss

    data, _ = multi_data
    cfg, task = build_task([
        data, "--user-dir", PLUGIN, "--task", "translation_multi_langtok", "--cpu",
        "--lang-pairs", "en-de,fr-en", *TINY_TRANSFORMER[2:], "--arch", "transformer",
        "--criterion", "label_smoothed_cross_entropy_with_contrastive", "--label-smoothing", "0.1",
        "--contrastive-lambda", "1.0", "--temperature", "0.1"])
    task.load_dataset("valid")
    model = task.build_model(cfg.model).eval()
    criterion = task.build_criterion(cfg.criterion)
    direction = task.dataset("valid").datasets[0]
    sample = direction.collater([direction[i] for i in range(5)])
    d = task.dictionary
    with torch.no_grad():
        total, sample_size, log = criterion(model, sample)
        criterion.contrastive_lambda = 0.0
        ce, _, _ = criterion(model, sample)
        # the positive by hand: LANG_TOK_DE + target tokens, encoded alone
        positives, anchors = [], []
        for i in range(5):
            target = sample["target"][i][sample["target"][i].ne(d.pad())]
            tokens = torch.cat([torch.tensor([d.index("LANG_TOK_DE")]), target]).unsqueeze(0)
            out = model.encoder(tokens, src_lengths=torch.tensor([tokens.size(1)]))
            positives.append(out["encoder_out"][0].mean(0)[0])
            src = sample["net_input"]["src_tokens"][i]
            src = src[src.ne(d.pad())].unsqueeze(0)
            out = model.encoder(src, src_lengths=torch.tensor([src.size(1)]))
            anchors.append(out["encoder_out"][0].mean(0)[0])
        expected = contrastive_loss(torch.stack(anchors), torch.stack(positives), 0.1)
    assert log["contrastive_loss"] > 0
    assert torch.isclose(total - ce, expected * sample["ntokens"] / 5, rtol=1e-4, atol=1e-4)


def test_aligned_augmentation_pairs_substituted_monolingual_text_with_itself(multi_data, tmp_path):
    import shutil

    data, dicts = multi_data
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    (copy / "train.mono.en").write_text("open the red file\nsave a new window\n")
    task = multi_task(copy, "--lang-pairs", "en-de", "--mono-langs", "en", "--aa-prob", "1.0",
                      "--ras-dicts", f"{dicts}/en-de.txt", task="translation_multi_langtok_aa")
    task.load_dataset("train")
    aa = dict(zip(task.dataset("train").keys, task.dataset("train").datasets))["en-en (AA)"]
    assert aa.source_words(0) == ["öffnen", "the", "rot", "Datei"]
    item, d = aa[0], task.dictionary
    assert item["source"][0] == d.index("LANG_TOK_EN") and item["tgt_tag"] == d.index("LANG_TOK_EN")
    assert task.build_bpe(None).decode(d.string(item["target"][:-1])) == "open the red file"
    with pytest.raises(ValueError, match="--mono-langs de: no dictionary"):
        multi_task(copy, "--lang-pairs", "en-de", "--mono-langs", "de",
                   "--ras-dicts", f"{dicts}/en-de.txt", task="translation_multi_langtok_aa")


def test_top1_retrieval_accuracy_by_hand():
    import torch

    from ptnmt_fairseq.mrasp2.retrieval import top1_accuracy

    keys = torch.eye(3)
    assert top1_accuracy(keys, keys) == 1.0
    queries = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]])  # rows 1 and 2 swapped
    assert top1_accuracy(queries, keys) == pytest.approx(1 / 3)


@pytest.mark.parametrize("prob", [0.1, 0.3, 0.8])
def test_epoch_substitutions_rate_and_positions(tmp_path, prob):
    write(tmp_path / "en-xx.txt", "".join(f"w{i}\tt{i}\n" for i in range(50)))
    dictionaries = AlignedDictionaries([str(tmp_path / "en-xx.txt")])
    sentences = [[f"w{i}" for i in range(50)] + ["unknown"] * 50 for _ in range(400)]
    ras = EpochSubstitutions(sentences, "en", dictionaries, prob, seed=3, name="t")
    ras.draw(1)
    assert abs(ras.replaced / (50 * 400) - prob) < 0.015
    for index in range(0, 400, 37):
        for position, word in ras.changes(1, index):
            assert position < 50 and word == f"t{position}"



def test_unicode_line_separators_do_not_shift_the_pairs(multi_data, tmp_path):
    import shutil

    data, _ = multi_data
    copy = shutil.copytree(data, tmp_path / "data")
    src, tgt = copy / "test.en-de.en", copy / "test.en-de.de"
    lines = src.read_text(encoding="utf-8").split("\n")
    lines[2] = lines[2] + "\u2028" + lines[2]  # wc -l and fairseq-preprocess still count 8
    src.write_text("\n".join(lines), encoding="utf-8")
    task = multi_task(copy, "-s", "en", "-t", "de")
    task.load_dataset("test")
    dataset = task.dataset("test")
    references = tgt.read_text(encoding="utf-8").split("\n")
    assert len(dataset) == 8
    assert dataset.src_lines[2] == lines[2] and dataset.tgt_lines[3] == references[3]


def test_off_target_rate_of_zero_shot_output():
    from ptnmt_fairseq.common.multilingual.language_id import off_target

    outputs = ["Datei konnte nicht geöffnet werden", "Die Verbindung wurde getrennt",
               "Could not open the file", ""]  # 2 German, 1 English, 1 empty: 2 of 4 off target
    result = off_target(outputs, "de", ["en", "de", "fr", "ro"])
    assert result == {"rate": 50.0, "languages": {"de": 2, "en": 1, "": 1}}
    assert off_target(outputs[2:3], "en", ["en", "de"])["rate"] == 0.0
    with pytest.raises(ValueError, match="target language 'ro' is not among"):
        off_target(outputs, "ro", ["en", "de"])
