"""Chimera in process: the memory's size and padding invariance, positions of speech, one decoder
for both modalities, the contrastive loss by hand, the whole criterion by hand. The corpus and
the tiny wav2vec 2.0 are ``conftest.corpus``."""
import math

import pytest
import torch

import ptnmt_fairseq  # noqa: F401  (compat fixes, registrations)
from ptnmt_fairseq.chimera.criterion import memory_slots
from ptnmt_fairseq.chimera.model import SharedSemanticMemory
from ptnmt_fairseq.common.contrastive import contrastive_loss
from conftest import CHIMERA_TRAIN_ARGS, build_task, chimera_task, label_smoothed_mean


def tiny_memory(slots=5, layers=2, dim=16):
    from fairseq.models.transformer import TransformerConfig

    cfg = TransformerConfig()
    cfg.encoder.embed_dim, cfg.encoder.ffn_embed_dim, cfg.encoder.attention_heads = dim, 32, 4
    cfg.encoder.normalize_before = True
    torch.manual_seed(0)
    return SharedSemanticMemory(cfg, slots, layers).eval()


def test_memory_has_m_slots_whatever_the_input_length():
    memory = tiny_memory(slots=5)
    for length in (1, 7, 300):
        states = torch.randn(length, 3, 16)
        out = memory(states, torch.zeros(3, length, dtype=torch.bool))
        assert out.shape == (5, 3, 16)


def test_memory_ignores_padding_and_never_lets_slots_see_each_other():
    memory = tiny_memory()
    states = torch.randn(9, 2, 16)
    padding = torch.zeros(2, 9, dtype=torch.bool)
    padding[1, 4:] = True
    with torch.no_grad():
        batch = memory(states, padding)
        alone = memory(states[:4, 1:2], padding[1:2, :4])
        garbage = states.clone()
        garbage[4:, 1] = 1e3  # whatever the padded steps hold
        noisy = memory(garbage, padding)
    assert torch.allclose(batch[:, 1], alone[:, 0], atol=1e-5)
    assert torch.allclose(noisy[:, 1], batch[:, 1], atol=1e-5)
    # ... but it reads the real steps
    changed = states.clone()
    changed[2, 1] = torch.randn(16)  # not a constant shift, which pre-norm LayerNorm removes
    with torch.no_grad():
        assert not torch.allclose(memory(changed, padding)[:, 1], batch[:, 1], atol=1e-3)
    # slot 0's output does not depend on the other slots' queries
    with torch.no_grad():
        before = memory(states, padding)[0]
        memory.queries[1:] += 1.0
        after = memory(states, padding)[0]
    assert torch.allclose(before, after, atol=1e-5)


def padded_waveforms():
    torch.manual_seed(0)
    waveforms = torch.randn(2, 16000) * 0.1
    waveforms[1, 8000:] = 0.0
    return waveforms, torch.tensor([16000, 8000])


@pytest.mark.parametrize("frontend", ["wav2vec2", "fbank"])
def test_a_sentence_gets_the_same_memory_alone_and_padded_in_a_batch(corpus, frontend):
    """The authors' memory attends to padded frames (its output depends on the batch); ours
    does not, for speech through either front-end and for text."""
    data, w2v = corpus
    extra = ["--speech-frontend", "fbank", "--conv-channels", "32"] if frontend == "fbank" else []
    cfg, task = chimera_task(data, w2v, *extra)
    model = task.build_model(cfg.model).eval()
    waveforms, lengths = padded_waveforms()
    text = torch.tensor([[5, 6, 7, 8, 2], [5, 9, 2, 1, 1]])
    with torch.no_grad():
        speech = memory_slots(model.encoder(waveforms, lengths))
        speech_alone = memory_slots(model.encoder(waveforms[1:2, :8000], lengths[1:]))
        words = memory_slots(model.encoder(text, torch.tensor([5, 3])))
        words_alone = memory_slots(model.encoder(text[1:2, :3], torch.tensor([3])))
    assert speech.shape == (2, 8, 32) and words.shape == (2, 8, 32)
    assert torch.allclose(speech[1], speech_alone[0], atol=1e-4)
    assert torch.allclose(words[1], words_alone[0], atol=1e-4)


def test_speech_gets_positions_only_from_the_filterbank_front_end(corpus):
    """wav2vec 2.0 speech: no position embedding (the authors'); filterbanks: sinusoidal."""
    data, w2v = corpus
    features = torch.randn(1, 6, 32)
    stand_in = torch.full((1, 6), 3)
    for extra, has_positions in (([], False), (["--speech-frontend", "fbank"], True)):
        cfg, task = chimera_task(data, w2v, *extra)
        transformer = task.build_model(cfg.model).eval().encoder.transformer
        x, _ = transformer.forward_embedding(stand_in, features)
        scaled = transformer.embed_scale * features
        assert torch.allclose(x, scaled) != has_positions
        if has_positions:
            assert torch.allclose(x, scaled + transformer.embed_positions(stand_in))


def test_speech_and_text_reach_the_same_decoder_through_m_slots(corpus):
    data, w2v = corpus
    cfg, task = chimera_task(data, w2v)
    model = task.build_model(cfg.model).eval()
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    sample = dataset.collater([dataset[i] for i in range(3)])
    keys_seen = []
    hook = model.decoder.layers[0].encoder_attn.register_forward_hook(
        lambda module, args, kwargs, out: keys_seen.append(kwargs["key"].shape), with_kwargs=True)
    encoder_steps = []
    with torch.no_grad():
        for name in ("st", "mt"):
            net_input = sample["tasks"][name]["net_input"]
            logits, _ = model(**net_input)
            # the one decoder, fed the memory of this modality, gives the model's output
            encoded = model.encoder(net_input["src_tokens"], net_input["src_lengths"])
            again, _ = model.decoder(net_input["prev_output_tokens"], encoder_out=encoded)
            assert torch.equal(logits, again)
            encoder_steps.append(encoded["contextual_out"][0].size(0))
    hook.remove()
    # cross-attention keys: the 8 memory slots for speech and for text, never the T steps of h
    assert [shape[0] for shape in keys_seen] == [8] * 4
    assert all(steps != 8 for steps in encoder_steps), encoder_steps


def test_contrastive_loss_matches_a_hand_computation():
    """One sentence, M = 2 slots: text t1 = (1, 0), t2 = (0, 1); speech s1 = (1, 1), s2 = (0, 2).
    cos(t1, s1) = 1/sqrt2, cos(t1, s2) = 0, cos(t2, s1) = 1/sqrt2, cos(t2, s2) = 1; tau = 0.1.
    For each text slot the softmax runs over the speech slots (the authors' axis)."""
    text = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    speech = torch.tensor([[[1.0, 1.0], [0.0, 2.0]]])
    c = 1 / math.sqrt(2)
    row1 = -math.log(math.exp(c / 0.1) / (math.exp(c / 0.1) + math.exp(0.0)))
    row2 = -math.log(math.exp(1 / 0.1) / (math.exp(c / 0.1) + math.exp(1 / 0.1)))
    assert contrastive_loss(text, speech, 0.1).item() == pytest.approx(row1 + row2, rel=1e-6)
    # the other axis (softmax over text slots per speech slot) gives another value
    assert contrastive_loss(speech, text, 0.1).item() != pytest.approx(row1 + row2, rel=1e-3)
    # sentences are separate groups: a second sentence adds its own term, no cross-sentence
    # negatives; permuting the sentences changes nothing
    two = contrastive_loss(torch.cat([text, speech]), torch.cat([speech, text]), 0.1)
    assert two.item() == pytest.approx(
        (contrastive_loss(text, speech, 0.1) + contrastive_loss(speech, text, 0.1)).item())
    swapped = contrastive_loss(torch.cat([speech, text]), torch.cat([text, speech]), 0.1)
    assert swapped.item() == pytest.approx(two.item())


def test_criterion_is_st_plus_mt_plus_contrastive_by_hand(corpus):
    data, w2v = corpus
    cfg, task = chimera_task(data, w2v, "--st-weight", "1.0", "--mt-weight", "0.5",
                             "--contrastive-weight", "2.0", "--contrastive-temperature", "0.2")
    assert list(task.train_tasks) == ["st", "mt"]  # the task's default
    model = task.build_model(cfg.model).eval()
    criterion = task.build_criterion(cfg.criterion)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    sample = dataset.collater([dataset[i] for i in range(4)])
    with torch.no_grad():
        loss, sample_size, log = criterion(model, sample)
        expected, memories = 0.0, {}
        for name, weight in (("st", 1.0), ("mt", 0.5)):
            net_input = sample["tasks"][name]["net_input"]
            encoded = model.encoder(net_input["src_tokens"], net_input["src_lengths"])
            memories[name] = encoded["encoder_out"][0]  # M x B x d
            logits, _ = model.decoder(net_input["prev_output_tokens"], encoder_out=encoded)
            lprobs = torch.log_softmax(logits.double(), dim=-1)
            expected += weight * label_smoothed_mean(lprobs, sample["tasks"][name]["target"],
                                                     task.dictionary.pad(), 0.1)
        # L_ctr written out: per sentence b and text slot i, softmax over speech slots j
        text = torch.nn.functional.normalize(memories["mt"].double(), dim=-1)
        speech = torch.nn.functional.normalize(memories["st"].double(), dim=-1)
        cosines = torch.einsum("ibd,jbd->bij", text, speech) / 0.2
        ctr = -torch.diagonal(torch.log_softmax(cosines, dim=-1), dim1=1, dim2=2).sum()
        expected += 2.0 * ctr / sample_size
    assert sample_size == sample["tasks"]["st"]["ntokens"]
    assert torch.isclose(loss.double() / sample_size, expected, rtol=1e-4)
    assert log["contrastive_loss"] == pytest.approx(2.0 * ctr.item(), rel=1e-4)


def test_external_mt_batches_get_no_contrastive_loss(corpus):
    data, w2v = corpus
    cfg, task = chimera_task(data, w2v, "--external-mt", "train_mt.tsv")
    model = task.build_model(cfg.model).eval()
    criterion = task.build_criterion(cfg.criterion)
    task.load_dataset("train")
    triples, external = task.dataset("train").datasets
    with torch.no_grad():
        _, _, text_log = criterion(model, external.collater([external[i] for i in range(3)]))
        _, _, triple_log = criterion(model, triples.collater([triples[i] for i in range(3)]))
    assert "mt_loss" in text_log and "contrastive_loss" not in text_log
    assert "st_loss" not in text_log
    assert {"st_loss", "mt_loss", "contrastive_loss"} <= triple_log.keys()


def test_torch_ddp_is_refused_with_the_backend_that_works(corpus):
    """torch's DistributedDataParallel does not synchronise gradients of passes that bypass its
    forward, as this criterion's do; legacy_ddp does (tested through the CLI)."""
    import torch.distributed as dist
    from fairseq.distributed import ModuleProxyWrapper
    from conftest import free_port

    data, w2v = corpus
    cfg, task = chimera_task(data, w2v)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0,
                            world_size=1)
    try:
        wrapped = ModuleProxyWrapper(torch.nn.parallel.DistributedDataParallel(model))
        with pytest.raises(ValueError, match="--ddp-backend legacy_ddp"):
            criterion(wrapped, dataset.collater([dataset[i] for i in range(2)]))
    finally:
        dist.destroy_process_group()


def test_bad_memory_options_are_refused(corpus):
    data, w2v = corpus
    cfg, task = build_task([data, "--w2v-path", w2v, *CHIMERA_TRAIN_ARGS, "--memory-slots", "0"])
    with pytest.raises(ValueError, match="--memory-slots 0"):
        task.build_model(cfg.model)
    cfg, task = chimera_task(data, w2v, "--contrastive-temperature", "0")
    with pytest.raises(ValueError, match="--contrastive-temperature 0"):
        task.build_criterion(cfg.criterion)


def test_an_update_never_mixes_triples_and_external_mt(corpus):
    """With --update-freq N, batches come N of one kind at a time (fairseq's mult_rate), so
    the logged losses and the contrastive term of an update come from one kind of data."""
    data, w2v = corpus
    _, task = chimera_task(data, w2v, "--external-mt", "train_mt.tsv", "--update-freq", "2",
                           "--batch-size", "4")
    task.load_dataset("train")
    iterator = task.get_batch_iterator(task.dataset("train"), max_tokens=200000, max_sentences=4,
                                       seed=1, epoch=1)
    kinds = ["st" in b["tasks"] for b in iterator.next_epoch_itr(shuffle=True)]
    assert len(kinds) % 2 == 0 and True in kinds and False in kinds
    assert all(kinds[i] == kinds[i + 1] for i in range(0, len(kinds), 2))
    _, task = chimera_task(data, w2v, "--external-mt", "train_mt.tsv", "--update-freq", "1000")
    task.load_dataset("train")
    with pytest.raises(ValueError, match="triples: .* fewer than --update-freq x workers = 1000"):
        task.get_batch_iterator(task.dataset("train"), max_tokens=200000, seed=1, epoch=1)
