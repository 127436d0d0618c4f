"""MASS and CSP by hand: span length and placement, the encoder's 80/10/10 noise, the decoder's
inputs, targets and positions, the loss on the span only, k = 1 and k = m, language embeddings,
CSP's code-switching rates, and on-the-fly back-translation (direction, eval mode, no gradient)."""
import re

import numpy as np
import pytest
import torch

from conftest import PLUGIN, build_task
from ptnmt_fairseq.mass.dataset import MASK_SYMBOL
from ptnmt_fairseq.mass.noising import (
    CodeSwitchLexicon, choose_span, code_switch_encoder_input, decoder_side, mask_encoder_input,
    span_length,
)

SMALL = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "16",
         "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
         "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2",
         "--decoder-attention-heads", "2", "--dropout", "0"]


def test_span_length_is_per_sentence_and_bounded():
    assert [span_length(m, 0.5) for m in (1, 2, 3, 4, 60)] == [1, 1, 2, 2, 30]
    assert span_length(7, 1.0) == 7 and span_length(7, 0.01) == 1
    assert span_length(2, 0.9) == 1 and span_length(10, 0.99) == 9  # one token stays visible
    with pytest.raises(ValueError):
        span_length(0, 0.5)


def test_span_start_is_first_last_or_uniform_at_the_authors_rates():
    rng = np.random.default_rng(0)
    m, k, draws = 10, 5, 30000
    starts = np.bincount([choose_span(m, k, rng)[0] for _ in range(draws)], minlength=7)[1:]
    # 6 possible starts: 0.2 first + 0.6/6, 0.2 last + 0.6/6, 0.1 for each of the 4 others
    expected = np.array([0.3, 0.1, 0.1, 0.1, 0.1, 0.3])
    assert np.abs(starts / draws - expected).max() < 0.012
    span = choose_span(m, k, rng)
    assert np.array_equal(span, np.arange(span[0], span[0] + k))
    uniform = np.bincount([choose_span(m, k, rng, (0.0, 0.0))[0] for _ in range(draws)])[1:]
    assert np.abs(uniform / draws - 1 / 6).max() < 0.012
    discrete = choose_span(m, k, rng, contiguous=False)
    assert len(set(discrete)) == k and discrete.min() >= 1 and discrete.max() <= m


def test_encoder_noise_is_80_mask_10_random_10_unchanged_and_never_special():
    rng = np.random.default_rng(1)
    tokens = np.full(20002, 7)
    tokens[0], tokens[-1] = 4, 2
    positions = np.arange(1, 20001)
    random_ids = np.arange(10, 200)
    out = mask_encoder_input(tokens, positions, rng, mask_idx=3, random_ids=random_ids)
    noised = out[positions]
    assert abs((noised == 3).mean() - 0.8) < 0.01
    assert abs(np.isin(noised, random_ids).mean() - 0.1) < 0.01
    assert abs((noised == 7).mean() - 0.1) < 0.01
    assert out[0] == 4 and out[-1] == 2  # tag and </s> untouched


def test_decoder_side_by_hand():
    T, a, b, c, d, e, EOS, M, PAD = 50, 11, 12, 13, 14, 15, 2, 3, 1
    tokens = np.array([T, a, b, c, d, e, EOS])
    span = np.array([2, 3, 4])  # x_2 x_3 x_4 = b c d
    side = decoder_side(tokens, span, "span", M, PAD)
    assert side.prev_output_tokens.tolist() == [M, b, c]  # Figure 1: [M], then the span shifted
    assert side.target.tolist() == [b, c, d]
    assert side.positions.tolist() == [1, 2, 3]  # fine-tuning predicts x_p at position p - 1
    full = decoder_side(tokens, span, "masked", M, PAD)
    assert full.prev_output_tokens.tolist() == [M, M, b, c, M, M]
    assert full.target.tolist() == [PAD, b, c, d, PAD, PAD]
    assert full.positions.tolist() == [0, 1, 2, 3, 4, 5]
    fed = decoder_side(tokens, span, "feed", M, PAD)
    assert fed.prev_output_tokens.tolist() == [T, a, b, c, d, e]
    assert fed.target.tolist() == full.target.tolist()
    scattered = decoder_side(tokens, np.array([1, 2, 5]), "span", M, PAD)
    assert scattered.prev_output_tokens.tolist() == [M, a, M]  # x_4 is visible: [M]
    assert scattered.positions.tolist() == [0, 1, 4]


def test_k_equal_m_is_a_language_model_and_k_1_a_masked_lm():
    tokens = np.array([50, 11, 12, 13, 2])
    lm = decoder_side(tokens, choose_span(3, span_length(3, 1.0), np.random.default_rng(0)),
                      "span", 3, 1)
    assert lm.prev_output_tokens.tolist() == [3, 11, 12] and lm.target.tolist() == [11, 12, 13]
    assert lm.positions.tolist() == [0, 1, 2]
    one = choose_span(3, span_length(3, 0.1), np.random.default_rng(0))
    assert len(one) == 1
    mlm = decoder_side(tokens, one, "span", 3, 1)
    assert mlm.prev_output_tokens.tolist() == [3] and mlm.positions.tolist() == [one[0] - 1]


def mass_model(data, *extra):
    """(task, model) as ``fairseq-train --task mass --arch mass_tiny`` (1+1 layers, d 16)."""
    from fairseq import models

    cfg, task = build_task([data, "--user-dir", PLUGIN, "--task", "mass", "--arch", "mass_tiny",
                            "--cpu", *SMALL, *extra])
    task.load_dataset("train")
    return task, models.build_model(cfg.model, task)


@pytest.fixture(scope="module")
def task_and_model(mass_data):
    return mass_model(mass_data[0], "--mono-langs", "en,de")


def test_each_sentence_masks_half_of_itself_and_the_first_target_is_hidden(task_and_model):
    """The masked encoder positions are exactly the predicted ones, the first included
    (microsoft/MASS's fairseq code leaves x_u visible and masks x_{v+1}); a batch mixing short
    and long sentences masks each at its own length (its XLM code: the batch's, #64)."""
    task, _ = task_and_model
    dataset = task.datasets["train"].datasets[0]
    mask = task.dictionary.index(MASK_SYMBOL)
    first_masked, firsts = 0, 0
    for index in range(len(dataset)):
        item = dataset[index]
        original = torch.from_numpy(dataset.tokens(index))
        span = item["positions"] + 1
        m = len(original) - 2
        assert len(span) == span_length(m, 0.5)
        assert torch.equal(item["target"], original[span])
        changed = (item["source"] != original).nonzero()[:, 0]
        assert set(changed.tolist()) <= set(span.tolist())
        firsts += 1
        first_masked += int(item["source"][span[0]] == mask)
    assert 0.6 < first_masked / firsts < 0.95
    short = dataset.collater([dataset[0], dataset[1]])
    lengths = short["net_input"]["src_lengths"] - 2
    spans = short["target"].ne(task.dictionary.pad()).sum(1)
    assert spans.tolist() == [span_length(int(m), 0.5) for m in lengths]


def test_mixed_lengths_3_and_60(task_and_model):
    from ptnmt_fairseq.mass.dataset import MaskedSpanDataset

    task, _ = task_and_model
    words = " ".join(["red"] * 3), " ".join(["blue"] * 60)
    dataset = MaskedSpanDataset("mixed", list(words), "en", task.dictionary, task.pieces,
                                task.mask_idx)
    batch = dataset.collater([dataset[0], dataset[1]])
    m = batch["net_input"]["src_lengths"] - 2
    k = batch["target"].ne(task.dictionary.pad()).sum(1)
    assert (k.float() / m.float() - 0.5).abs().max() < 0.2
    assert batch["net_input"]["decoder_positions"][0, k[0]:].eq(-1).all()


def test_loss_covers_the_span_only(task_and_model):
    task, model = task_and_model
    from fairseq import criterions
    from omegaconf import OmegaConf

    dataset = task.datasets["train"].datasets[0]
    criterion = criterions.build_criterion(OmegaConf.create(
        {"_name": "label_smoothed_cross_entropy", "label_smoothing": 0.0, "sentence_avg": False,
         "ignore_prefix_size": 0, "report_accuracy": False}), task)
    model.eval()
    try:
        for decoder_input in ("span", "masked"):
            dataset.decoder_input = decoder_input
            items = [dataset[i] for i in range(4)]
            batch = dataset.collater(items)
            loss, sample_size, _ = criterion(model, batch)
            lprobs = model.get_normalized_probs(model(**batch["net_input"]), log_probs=True)
            spans = [choose_span_of(dataset, i) for i in range(4)]
            by_hand = 0.0
            for row, span in enumerate(spans):
                steps = (torch.arange(len(span)) if decoder_input == "span"
                         else torch.as_tensor(span) - 1)
                tokens = torch.from_numpy(dataset.tokens(row))[span]
                by_hand -= lprobs[row, steps, tokens].sum()
            assert torch.allclose(loss, by_hand, atol=1e-4)
            assert sample_size == sum(len(span) for span in spans)
    finally:
        dataset.decoder_input = "span"


def choose_span_of(dataset, index):
    """The masked positions of item ``index``, drawn again from its own random generator."""
    m = len(dataset.tokens(index)) - 2
    return choose_span(m, span_length(m, dataset.span_ratio), dataset.rng(index)).tolist()


def test_decoder_positions_and_language_change_the_output(task_and_model):
    task, model = task_and_model
    model.eval()
    dataset = task.datasets["train"].datasets[0]
    batch = dataset.collater([dataset[i] for i in range(3)])
    net = batch["net_input"]
    out = model(**net)[0]
    moved = dict(net, decoder_positions=torch.where(net["decoder_positions"] >= 0,
                                                    net["decoder_positions"] + 1,
                                                    net["decoder_positions"]))
    assert not torch.allclose(out, model(**moved)[0])
    # Pre-training: the decoder's language is the source's (read from its first token).
    seen = []
    explicit = model.decoder.embed_positions.explicit
    model.decoder.embed_positions.explicit = lambda p, language: (seen.append(language),
                                                                  explicit(p, language))[1]
    try:
        model(**net)
    finally:
        model.decoder.embed_positions.explicit = explicit
    lang_of = model.encoder.embed_positions.lang_of_token
    assert torch.equal(seen[0], lang_of[net["src_tokens"][:, 0]])
    # Generation and fine-tuning: the decoder's language is its first input's tag, and its
    # embedding is added at every step (zeroing the table changes every output).
    src, lengths = net["src_tokens"], net["src_lengths"]
    prev = torch.full((src.size(0), 3), task.dictionary.index("LANG_TOK_DE"))
    prev[:, 1:] = src[:, 1:3]
    with_languages = model(src, lengths, prev)[0]
    languages = model.decoder.embed_positions.languages.weight
    saved = languages.detach().clone()
    with torch.no_grad():
        languages.zero_()
    try:
        without = model(src, lengths, prev)[0]
    finally:
        with torch.no_grad():
            languages.copy_(saved)
    assert not torch.allclose(with_languages[:, 1:], without[:, 1:])
    assert model.decoder.embed_positions.languages is model.encoder.embed_positions.languages
    with pytest.raises(ValueError, match="must start with a language token"):
        model(src[:, 1:], lengths - 1, prev)


def test_explicit_positions_match_fairseqs_sinusoidal_numbering():
    from fairseq.modules import SinusoidalPositionalEmbedding
    from ptnmt_fairseq.mass.model import PositionsAndLanguage

    sinusoidal = SinusoidalPositionalEmbedding(8, padding_idx=1, init_size=4)
    wrapper = PositionsAndLanguage(sinusoidal, None, torch.full((10,), -1), 1, None, "decoder")
    tokens = torch.tensor([[5, 6, 7, 8, 9, 5, 6]])  # longer than the precomputed table
    positions = torch.arange(7)[None]
    assert torch.allclose(wrapper.lookup(positions), sinusoidal(tokens))
    padded = wrapper.lookup(torch.tensor([[0, -1]]))
    assert torch.equal(padded[0, 1], torch.zeros(8))


def test_code_switching_replaces_fragment_words_in_the_lexicon_at_80_10_10():
    table = {"red": ["rot", "rötlich"], "blue": ["blau"]}
    ids = {"red": [10], "blue": [11], "sky": [12, 13], "rot": [20], "rötlich": [21, 22], "Rot": [24],
           "Rötlich": [25],
           "blau": [23]}
    lexicon = CodeSwitchLexicon(table, top_k=3, encode=lambda w: ids[w])
    words = ["red", "blue", "sky", "red"]
    word_ids = [np.array(ids[w]) for w in words]
    rng = np.random.default_rng(0)
    random_ids = np.arange(100, 200)
    counts = {"translated": 0, "random": 0, "kept": 0, "sky_masked": 0, "outside_changed": 0}
    draws = 6000
    for _ in range(draws):
        out, switched = code_switch_encoder_input(word_ids, words, np.array([0, 1, 2]), lexicon,
                                                  rng, 3, random_ids)
        red, blue, sky = out[0].tolist(), out[1].tolist(), out[2].tolist()
        counts["translated"] += (red in ([20], [21, 22])) + (blue == [23])
        counts["random"] += (red[0] >= 100) + (blue[0] >= 100)
        counts["kept"] += (red == [10]) + (blue == [11])
        counts["sky_masked"] += sky == [3, 3]
        counts["outside_changed"] += out[3].tolist() != [10]
        assert switched == (red in ([20], [21, 22])) + (blue == [23])
    assert abs(counts["translated"] / (2 * draws) - 0.8) < 0.02
    assert abs(counts["random"] / (2 * draws) - 0.1) < 0.02
    assert abs(counts["kept"] / (2 * draws) - 0.1) < 0.02
    assert abs(counts["sky_masked"] / draws - 0.8) < 0.03  # no entry: [M], never a translation
    assert counts["outside_changed"] == 0
    assert lexicon.entries("Red")[0].tolist() == [24] and lexicon.entries("sky") is None


def test_back_translation_pairs_run_the_other_way_without_gradient(mass_data):
    task, model = mass_model(mass_data[0], "--mono-langs", "en,de", "--mono-objective",
                             "back_translation", "--lang-pairs", "en-de,de-en")
    en_corpus, de_corpus = task.datasets["train"].datasets
    sample = en_corpus.collater([en_corpus[0], de_corpus[1], en_corpus[2], de_corpus[3]])
    seen = []
    forward = model.decoder.forward

    def spy(*args, **kwargs):
        seen.append((torch.is_grad_enabled(), model.training))
        return forward(*args, **kwargs)

    model.decoder.forward = spy
    model.train()
    pairs = task.back_translate(sample, model)
    assert seen and all(not grad and not training for grad, training in seen)
    assert model.training
    en, de = (task.dictionary.index(t) for t in ("LANG_TOK_EN", "LANG_TOK_DE"))
    assert len(seen) > 2  # one generation per language, several decoder steps
    sources = pairs["net_input"]["src_tokens"][:, 0].tolist()
    outputs = pairs["net_input"]["prev_output_tokens"][:, 0].tolist()
    assert sorted(zip(sources, outputs)) == sorted([(de, en), (en, de)] * 2)
    for row in range(4):  # the target is the original sentence, in the decoder's language
        original = [i for i, s in enumerate(sample["net_input"]["src_tokens"][:, 0].tolist())
                    if s == outputs[row] and torch.equal(
                        sample["target"][i][sample["target"][i].ne(1)],
                        pairs["target"][row][pairs["target"][row].ne(1)])]
        assert original, f"pair {row}: its target is none of the batch's sentences"


def test_random_replacements_and_fine_tuning_batches(mass_data, task_and_model):
    """Random tokens are never specials, tags or [M]; fine-tuning batches carry no span logic."""
    from ptnmt_fairseq.mass.dataset import replacement_ids

    task, _ = task_and_model
    ids = set(replacement_ids(task.dictionary, task.mask_idx).tolist())
    tags = {task.dictionary.index(t) for t in ("LANG_TOK_EN", "LANG_TOK_DE", "LANG_TOK_FR")}
    assert not ids & (tags | {task.mask_idx, *range(task.dictionary.nspecial)})
    assert len(ids) == len(task.dictionary) - task.dictionary.nspecial - len(tags) - 1
    translation, _ = mass_model(mass_data[0], "--lang-pairs", "en-de")
    pairs = translation.datasets["train"]
    batch = pairs.collater([pairs[i] for i in range(3)])
    assert "decoder_positions" not in batch["net_input"]
    assert batch["net_input"]["prev_output_tokens"][:, 0].eq(
        translation.dictionary.index("LANG_TOK_DE")).all()


@pytest.mark.parametrize("options, message", [
    (["--mono-objective", "csp", "--ras-dicts", "{dicts}/en-de.txt"],
     "--mono-langs de: no dictionary in --ras-dicts starts with de"),
    (["--mono-objective", "csp", "--ras-dicts", "{dicts}/en-de.txt,{dicts}/de-en.txt",
      "--csp-top-k", "0"], "--csp-top-k 0: keep at least one translation"),
    (["--mono-objective", "back_translation"], "give --lang-pairs"),
    (["--span-ratio", "0"], "--span-ratio 0.0: k/m must be in"),
])
def test_bad_options_are_refused_by_name(mass_data, options, message):
    data, dicts = mass_data
    with pytest.raises(ValueError, match=re.escape(message)):
        build_task([data, "--user-dir", PLUGIN, "--task", "mass", "--arch", "mass_tiny", "--cpu",
                    "--mono-langs", "en,de", *[o.format(dicts=dicts) for o in options]])
    with pytest.raises(ValueError, match="a language is given twice"):
        build_task([data, "--user-dir", PLUGIN, "--task", "mass", "--arch", "mass_tiny", "--cpu",
                    "--mono-langs", "en,en"])
