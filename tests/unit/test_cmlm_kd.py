"""C-MLM distillation in process: circular masks, the soft-label store and its refusals, the KD
loss by hand, alpha = 0 as label-smoothed cross-entropy, the teacher's input."""
import math

import numpy as np
import pytest
import torch

import ptnmt_fairseq  # noqa: F401  (compat fixes, registrations)
from ptnmt_fairseq.cmlm_kd import soft_labels
from ptnmt_fairseq.cmlm_kd.criterion import kd_loss
from ptnmt_fairseq.cmlm_kd.soft_labels import SoftLabelError, SoftLabelStore, write_store
from ptnmt_fairseq.cmlm_kd.teacher import cmlm_input, mask_target
from conftest import TINY_TRANSFORMER, build_task


@pytest.mark.parametrize("length", [1, 2, 6, 7, 8, 13, 14, 15, 40])
def test_circular_masks_cover_each_position_exactly_once(length):
    masks = soft_labels.circular_masks(length)
    assert len(masks) == min(length, 7)
    covered = np.concatenate(masks)
    assert sorted(covered.tolist()) == list(range(length))  # every position, once
    for i, positions in enumerate(masks):
        assert all(p % 7 == i for p in positions)


def fake_binarised(tmp_path, name="train.de-en.en"):
    prefix = tmp_path / name
    (tmp_path / f"{name}.bin").write_bytes(b"target tokens")
    (tmp_path / f"{name}.idx").write_bytes(b"index")
    dictionary = tmp_path / "dict.en.txt"
    dictionary.write_text("a 1\nb 1\n")
    return prefix, dictionary


def random_store(tmp_path, lengths, k=5):
    prefix, dictionary = fake_binarised(tmp_path)
    rng = np.random.RandomState(0)
    total = sum(lengths)
    ids = rng.randint(0, 100, size=(total, k))
    logits = rng.randn(total, k).astype(np.float32)
    out = write_store(tmp_path / "store", ids, logits, lengths, teacher="teacher.pt",
                      target_prefix=prefix, dictionary_path=dictionary)
    return out, prefix, dictionary, ids, logits


def test_store_refuses_labels_of_another_source(tmp_path):
    prefix, dictionary = fake_binarised(tmp_path)
    source, _ = fake_binarised(tmp_path, "train.de-en.de")
    out = write_store(tmp_path / "store", np.zeros((3, 2)), np.zeros((3, 2)), [3], teacher="t",
                      target_prefix=prefix, dictionary_path=dictionary, source_prefix=source)
    SoftLabelStore(out, prefix, dictionary, [3], k=2, source_prefix=source)  # the same: fine
    with pytest.raises(SoftLabelError, match="at least 1 teacher logit"):
        SoftLabelStore(out, prefix, dictionary, [3], k=0, source_prefix=source)
    (tmp_path / "train.de-en.de.bin").write_bytes(b"re-tokenised source")
    with pytest.raises(SoftLabelError, match="another source than .*train.de-en.de.bin"):
        SoftLabelStore(out, prefix, dictionary, [3], k=2, source_prefix=source)


def test_soft_labels_need_one_data_directory(tmp_path):
    from ptnmt_fairseq.cmlm_kd.task import single_data_directory

    fake_binarised(tmp_path, "train.de-en.en")
    assert single_data_directory(str(tmp_path), "train", "de", "en") == str(tmp_path)
    with pytest.raises(ValueError, match="one data directory, not 2 shards"):
        single_data_directory(f"{tmp_path}:{tmp_path}", "train", "de", "en")
    fake_binarised(tmp_path, "train1.de-en.en")
    with pytest.raises(ValueError, match="train1 files beside train"):
        single_data_directory(str(tmp_path), "train", "de", "en")


def test_store_round_trips_by_dataset_index(tmp_path):
    lengths = [3, 1, 5]
    out, prefix, dictionary, ids, logits = random_store(tmp_path, lengths)
    store = SoftLabelStore(out, prefix, dictionary, lengths, k=4)
    assert store.header["k"] == 5 and store.header["num_tokens"] == 9
    got_ids, got_logits = store.labels(2)  # rows 4..8, the first 4 of k
    assert np.array_equal(got_ids, ids[4:9, :4])
    assert np.allclose(got_logits, logits[4:9, :4].astype(np.float16))
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging left


def test_store_mismatches_are_refused(tmp_path):
    lengths = [3, 1, 5]
    out, prefix, dictionary, _, _ = random_store(tmp_path, lengths)
    with pytest.raises(SoftLabelError, match="labels for 3 sentences, the data has 2"):
        SoftLabelStore(out, prefix, dictionary, [3, 1], k=4)
    with pytest.raises(SoftLabelError, match="sentence 1 has 1 label rows, its target 2 tokens"):
        SoftLabelStore(out, prefix, dictionary, [3, 2, 5], k=4)
    with pytest.raises(SoftLabelError, match="5 logits stored per token, --kd-topk 8"):
        SoftLabelStore(out, prefix, dictionary, lengths, k=8)
    dictionary.write_text("a 1\nc 1\n")
    with pytest.raises(SoftLabelError, match="another target dictionary"):
        SoftLabelStore(out, prefix, dictionary, lengths, k=4)
    dictionary.write_text("a 1\nb 1\n")
    (tmp_path / "train.de-en.en.bin").write_bytes(b"re-binarised")
    with pytest.raises(SoftLabelError, match="checksum differs"):
        SoftLabelStore(out, prefix, dictionary, lengths, k=4)
    with pytest.raises(SoftLabelError, match="not a soft-label store"):
        SoftLabelStore(tmp_path, prefix, dictionary, lengths, k=4)


def test_kd_loss_matches_a_hand_computation():
    """Two positions, V = 3, K = 2; the second is padding. Teacher logits (2, 0) on ids (1, 0),
    T = 2: q = softmax(1, 0) = (e/(e+1), 1/(e+1)); loss = -(q1 log p(1) + q2 log p(0))."""
    lprobs = torch.log(torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]]))
    ids = torch.tensor([[1, 0], [2, 1]])
    logits = torch.tensor([[2.0, 0.0], [5.0, 1.0]])
    pad = torch.tensor([False, True])
    e = math.e
    expected = -(e / (e + 1) * math.log(0.5) + 1 / (e + 1) * math.log(0.2))
    assert kd_loss(lprobs, ids, logits, 2.0, pad).item() == pytest.approx(expected, rel=1e-6)
    # the temperature is on the teacher only: T -> infinity gives the mean over the K ids
    assert kd_loss(lprobs, ids, logits, 1e9, pad).item() == pytest.approx(
        -(math.log(0.5) + math.log(0.2)) / 2, rel=1e-6)


def soft_sample(task, model):
    """A training batch of the tiny data with random soft labels (K = 3) aligned to its target."""
    task.load_dataset("train")
    dataset = task.dataset("train")
    sample = dataset.collater([dataset[i] for i in range(4)])
    torch.manual_seed(0)
    shape = (*sample["target"].shape, 3)
    sample["soft_ids"] = torch.randint(4, len(task.target_dictionary), shape)
    sample["soft_logits"] = torch.randn(shape).half()
    return sample


def test_alpha_zero_is_label_smoothed_cross_entropy_and_alpha_mixes(tiny_data):
    args = [tiny_data, "--task", "translation", *TINY_TRANSFORMER, "--criterion", "cmlm_kd",
            "--label-smoothing", "0.1", "--optimizer", "adam", "--lr", "1e-3"]
    cfg0, task = build_task(args + ["--kd-alpha", "0"])
    model = task.build_model(cfg0.model)
    sample = soft_sample(task, model)
    cfg_ls, _ = build_task([tiny_data, "--task", "translation", *TINY_TRANSFORMER,
                            "--criterion", "label_smoothed_cross_entropy",
                            "--label-smoothing", "0.1", "--optimizer", "adam", "--lr", "1e-3"])
    cfg_half, _ = build_task(args + ["--kd-alpha", "0.5", "--kd-temperature", "2"])
    model.train()
    torch.manual_seed(1)
    zero, n0, _ = task.build_criterion(cfg0.criterion)(model, sample)
    torch.manual_seed(1)
    plain, n1, _ = task.build_criterion(cfg_ls.criterion)(model, sample)
    assert n0 == n1 and torch.equal(zero, plain)
    model.eval()
    with torch.no_grad():
        half, _, log = task.build_criterion(cfg_half.criterion)(model, sample)
        xe, _, _ = task.build_criterion(cfg_ls.criterion)(model, sample)
        net_output = model(**sample["net_input"])
        lprobs = model.get_normalized_probs(net_output, log_probs=True).view(-1, len(task.tgt_dict))
        target = sample["target"].view(-1)
        kd = kd_loss(lprobs, sample["soft_ids"].view(-1, 3), sample["soft_logits"].view(-1, 3),
                     2.0, target.eq(task.tgt_dict.pad()))
    assert torch.allclose(half, 0.5 * kd + 0.5 * xe, rtol=1e-5)
    assert log["kd_loss"] == pytest.approx(kd.item(), rel=1e-5)
    # alpha = 1, pure KD (the anchors' sanity check): the loss is L_kd, and a few steps on it
    # move the student towards the teacher
    pure_kd = task.build_criterion(build_task(args + ["--kd-alpha", "1", "--kd-temperature",
                                                      "2"])[0].criterion)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        pure, _, log = pure_kd(model, sample)
        losses.append(pure.item())
        pure.backward()
        optimizer.step()
    assert losses[0] == pytest.approx(kd.item(), rel=1e-5)
    assert losses[-1] < 0.9 * losses[0]


def test_training_without_soft_labels_is_an_error(tiny_data):
    cfg, task = build_task([tiny_data, "--task", "translation", *TINY_TRANSFORMER,
                            "--criterion", "cmlm_kd", "--optimizer", "adam", "--lr", "1e-3"])
    model = task.build_model(cfg.model).train()
    task.load_dataset("train")
    dataset = task.dataset("train")
    with pytest.raises(ValueError, match="--soft-labels"):
        task.build_criterion(cfg.criterion)(model, dataset.collater([dataset[0]]))


def test_teacher_input_segments_and_masks():
    source = torch.tensor([101, 7, 8, 102])  # [CLS] x [SEP] as translation_bert loads it
    target = torch.tensor([9, 10, 11, 102])  # y [SEP]
    masked = torch.tensor([False, True, False, True])
    input_ids, segments = cmlm_input(source, target, masked, mask_id=103, cls_id=101)
    assert input_ids.tolist() == [101, 7, 8, 102, 9, 103, 11, 103]
    assert segments.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    rng = np.random.RandomState(0)
    draws = [mask_target(5, rng) for _ in range(2000)]
    assert all(d.any() for d in draws)  # redrawn until something is masked
    # 0.15 per token, raised by redrawing empty masks: 0.15 / (1 - 0.85^5) = 0.27 on 5 tokens
    rate = np.mean([d.mean() for d in draws])
    assert rate == pytest.approx(0.15 / (1 - 0.85 ** 5), abs=0.02)


class Pairs:
    """The part of a LanguagePairDataset that dump() reads."""

    def __init__(self, pairs):
        self.items = [{"source": s, "target": t} for s, t in pairs]
        self.src_sizes = np.array([len(s) for s, _ in pairs])
        self.tgt_sizes = np.array([len(t) for _, t in pairs])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def test_dump_batches_equal_one_copy_at_a_time(tmp_path):
    """dump(): pairs sorted by length, padded batches, logits only at the masked positions; each
    stored row equals the teacher run on that one masked copy alone."""
    from types import SimpleNamespace

    from transformers import BertConfig, BertModel

    from ptnmt_fairseq.cmlm_kd.dump_soft_labels import dump, masked_copies
    from ptnmt_fairseq.cmlm_kd.soft_labels import StoreWriter
    from ptnmt_fairseq.cmlm_kd.teacher import CmlmTeacher

    torch.manual_seed(0)
    vocab, k = 30, 4
    bert = BertModel(BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=32,
                                max_position_embeddings=64), add_pooling_layer=False)
    teacher = CmlmTeacher(bert, torch.nn.Identity(), torch.nn.Linear(16, vocab)).eval()
    dictionary = SimpleNamespace(pad=lambda: 0, bos=lambda: 2, mask=lambda: 4)
    rng = np.random.RandomState(0)
    pairs = [(torch.tensor([2, *rng.randint(5, vocab, n), 3]),
              torch.tensor([*rng.randint(5, vocab, m), 3])) for n, m in [(9, 12), (2, 1), (5, 8)]]
    dataset = Pairs(pairs)
    prefix, dictionary_path = fake_binarised(tmp_path)
    with StoreWriter(tmp_path / "store", dataset.tgt_sizes, k, teacher="t", target_prefix=prefix,
                     dictionary_path=dictionary_path) as writer:
        dump(teacher, dataset, dictionary, writer, k, max_tokens=40, device=torch.device("cpu"),
             where="test")
        got_ids, got_logits = np.array(writer.ids), np.array(writer.logits)
        offsets = np.array(writer.offsets)
    assert len(got_ids) == sum(len(t) for _, t in pairs)
    indexed = [(i, s, t) for i, (s, t) in enumerate(pairs)]
    with torch.no_grad():
        for index, input_ids, segments, positions, start in masked_copies(indexed, dictionary,
                                                                          "test"):
            # the copy itself: [CLS] x [SEP] y [SEP] with exactly ``positions`` of y masked
            source, target = pairs[index]
            assert input_ids[:start].tolist() == source.tolist()
            shown = input_ids[start:]
            assert (shown[positions] == 4).all() and len(shown) == len(target)
            others = np.setdiff1d(np.arange(len(target)), positions)
            assert torch.equal(shown[others], target[others])
            assert segments.tolist() == [0] * start + [1] * len(target)
            logits = teacher(input_ids[None], segments[None], torch.ones_like(input_ids)[None])
            top = logits[0, start + positions].topk(k)
            rows = offsets[index] + positions
            assert np.array_equal(got_ids[rows], top.indices.numpy())
            assert np.allclose(got_logits[rows], top.values.numpy(), atol=2e-3)


def test_batches_carry_each_sentences_labels_aligned_to_its_target(tiny_data, tmp_path):
    """A store whose top id at each row is that row's own target token: in any batch order,
    soft_ids[..., 0] equals the target wherever it is not padding, and is pad elsewhere."""
    from ptnmt_fairseq.cmlm_kd.task import SoftLabelDataset

    cfg, task = build_task([tiny_data, "--task", "translation", *TINY_TRANSFORMER,
                            "--criterion", "cmlm_kd"])
    task.load_dataset("train")
    dataset = task.dataset("train")
    targets = [dataset[i]["target"].numpy() for i in range(len(dataset))]
    rows = np.concatenate(targets)
    ids = np.stack([rows, rows + 1, rows + 2], axis=1)
    logits = np.arange(len(rows), dtype=np.float32)[:, None].repeat(3, axis=1)
    sizes = [len(t) for t in targets]
    prefix, dictionary = tiny_data / "train.src-tgt.tgt", tiny_data / "dict.tgt.txt"
    store_dir = write_store(tmp_path / "store", ids, logits, sizes, teacher="self",
                            target_prefix=prefix, dictionary_path=dictionary)
    pad = task.tgt_dict.pad()
    labelled = SoftLabelDataset(dataset, SoftLabelStore(store_dir, prefix, dictionary, sizes, 2),
                                pad)
    batch = labelled.collater([labelled[i] for i in (7, 0, 3, 12)])
    target, soft = batch["target"], batch["soft_ids"]
    assert soft.shape == (*target.shape, 2)
    real = target.ne(pad)
    assert torch.equal(soft[..., 0][real], target[real])
    assert torch.equal(soft[..., 1][real], target[real] + 1)
    assert bool((soft[~real] == pad).all()) and bool((batch["soft_logits"][~real] == 0).all())
    offsets = np.cumsum([0] + sizes)
    for row, index in enumerate(batch["id"].tolist()):  # logits carry the store row number
        n = sizes[index]
        assert batch["soft_logits"][row, :n, 0].tolist() == list(range(offsets[index],
                                                                        offsets[index] + n))


def test_pairs_beyond_bert_are_caught_before_any_work(tmp_path):
    """The teacher drops pairs over 512 positions together (fairseq's filter checks each side
    alone); the dump refuses them, and empty sides, before the teacher runs."""
    from ptnmt_fairseq.cmlm_kd.dump_soft_labels import check_pairs
    from ptnmt_fairseq.cmlm_kd.teacher import CmlmDataset

    pairs = [(torch.tensor([2, 7, 3]), torch.tensor([8, 3])),  # fits
             (torch.tensor([2, *[7] * 300, 3]), torch.tensor([*[8] * 250, 3]))]  # 302 + 251
    teacher_data = CmlmDataset(Pairs(pairs), dictionary=None, seed=1)
    kept, ignored = teacher_data.filter_indices_by_size(np.arange(2), 512)
    assert kept.tolist() == [0] and ignored == [1]
    with pytest.raises(SoftLabelError, match=r"line 2 \(sentence 1\) gives 553 BERT positions, "
                                             r"more than 512 \(1 such pairs\)"):
        check_pairs(Pairs(pairs), "train.bin")
    empty = pairs[:1] + [(torch.tensor([2, 3]), torch.tensor([8, 3]))]
    with pytest.raises(SoftLabelError, match=r"line 2 \(sentence 1\) has an empty source"):
        check_pairs(Pairs(empty), "train.bin")
