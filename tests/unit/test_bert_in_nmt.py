"""CTNMT and BERT-fused in process: the gate, the distillation distance and rho by hand; BERT's
parameter group and its exactly-zero learning rate; drop-net by hand; BERT's features
independent of padding; the feature cache against live BERT and its refusals; BERT-fused's
incremental decoding and beam reordering against full forward passes."""
import json
import math
import shutil

import numpy as np
import pytest
import torch
from fairseq import optim
from fairseq.modules import MultiheadAttention
from fairseq.optim import lr_scheduler

import ptnmt_fairseq  # noqa: F401  (compat fixes, registrations)
from ptnmt_fairseq.bert_fused.model import BertFusedAttention, drop_net_weights
from ptnmt_fairseq.common.bert.feature_cache import build_cache
from ptnmt_fairseq.common.bert.features import BertFeatures
from ptnmt_fairseq.common.bert.pretrained import load_bert_model
from ptnmt_fairseq.ctnmt.lr_scheduler import slanted_triangular_rate
from ptnmt_fairseq.ctnmt.model import DynamicSwitch, distillation_distance
from conftest import PLUGIN, build_task

TINY = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "16",
        "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
        "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2",
        "--decoder-attention-heads", "2"]


def build(data, berts, arch, *extra):
    """(cfg, task, model) as fairseq-train builds them."""
    cfg, task = build_task([data, "--user-dir", PLUGIN, "--task", "translation_bert", "--arch",
                            arch, "--source-bert", berts[0], *TINY, "--cpu", *extra])
    return cfg, task, task.build_model(cfg.model)


def test_dynamic_switch_is_eq_6_and_7_by_hand():
    switch = DynamicSwitch(2, 2)
    with torch.no_grad():
        switch.w.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        switch.u.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
        switch.u.bias.copy_(torch.tensor([0.5, -1.0]))
    h_lm, h_nmt = torch.tensor([[[1.0, -1.0]]]), torch.tensor([[[2.0, 3.0]]])
    g1 = 1 / (1 + math.exp(-(1.0 + 3.0 + 0.5)))  # W h_lm + U h_nmt + b, channel 1
    g2 = 1 / (1 + math.exp(-(-2.0 + 2.0 - 1.0)))  # channel 2
    expected = [g1 * 1.0 + (1 - g1) * 2.0, g2 * -1.0 + (1 - g2) * 3.0]
    assert switch(h_lm, h_nmt).flatten().tolist() == pytest.approx(expected)
    assert torch.equal(DynamicSwitch(2, 2, gate=False)(h_lm, h_nmt), h_lm)  # input fusion: g = 1
    assert DynamicSwitch(3, 2)(torch.zeros(1, 1, 3), h_nmt).shape == (1, 1, 2)  # P projects
    # g is in (0, 1) elementwise, and a bias towards -inf closes the gate: plain NMT states
    with torch.no_grad():
        g = torch.sigmoid(switch.w(h_lm) + switch.u(h_nmt))
        assert ((g > 0) & (g < 1)).all()
        switch.u.bias.fill_(-1e4)
    assert torch.equal(switch(h_lm, h_nmt), h_nmt)


def test_distillation_distance_by_hand_and_stops_the_teacher_gradient():
    student = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]], requires_grad=True)
    teacher = torch.tensor([[[0.0, 0.0], [3.0, 6.0], [0.0, 0.0]]], requires_grad=True)
    keep = torch.tensor([[True, True, False]])  # the third position is padding
    distance = distillation_distance(student, teacher, keep)
    assert distance.item() == pytest.approx((1 + 4 + 0 + 4) / 2)
    distance.backward()
    assert teacher.grad is None and student.grad[0, 2].abs().sum() == 0


@pytest.mark.parametrize("t, rho", [(0, 0.0), (5000, 0.5), (9999, 0.9999), (10000, 1.0),
                                    (15000, 0.5), (19999, 1e-4), (20000, 0.0), (30000, 0.0)])
def test_slanted_triangular_rate_at_the_boundaries(t, rho):
    assert slanted_triangular_rate(t, 10000, 20000) == pytest.approx(rho)


def fairseq_optimizer(cfg, model):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = optim.build_optimizer(cfg.optimizer, params)
    return optimizer, lr_scheduler.build_lr_scheduler(cfg.lr_scheduler, optimizer)


def train_steps(task, cfg, model, optimizer, scheduler, steps):
    from fairseq import criterions

    criterion = criterions.build_criterion(cfg.criterion, task)
    task.load_dataset("train")
    batch = task.datasets["train"].collater([task.datasets["train"][i] for i in range(8)])
    model.train()
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        loss, _, _ = criterion(model, batch)
        optimizer.backward(loss)
        optimizer.step()
        scheduler.step_update(step)


def test_rate_zero_gives_bert_exactly_no_update_while_the_nmt_weights_train(bert_nmt_data,
                                                                           berts):
    cfg, task, model = build(bert_nmt_data, berts, "ctnmt_tiny", "--bert-fusion", "input",
                             "--optimizer", "adam", "--lr", "0.01", "--lr-scheduler",
                             "rate_scheduled", "--bert-rate", "0", "--warmup-updates", "2",
                             "--criterion", "label_smoothed_cross_entropy")
    bert = model.encoder.bert_features.bert
    optimizer, scheduler = fairseq_optimizer(cfg, model)
    groups = optimizer.optimizer.param_groups
    assert len(groups) == 2 and {id(p) for p in groups[1]["params"]} == {
        id(p) for p in bert.parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_steps(task, cfg, model, optimizer, scheduler, 3)
    assert groups[1]["lr"] == 0.0 and groups[0]["lr"] > 0
    after = model.state_dict()
    bert_keys = [k for k in after if k.startswith("encoder.bert_features.")]
    assert bert_keys and all(torch.equal(before[k], after[k]) for k in bert_keys)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in bert.parameters())
    assert not torch.equal(before["decoder.embed_tokens.weight"],
                           after["decoder.embed_tokens.weight"])


def test_ctnmt_distill_is_eq_5_and_reports_accuracy(bert_nmt_data, berts):
    from fairseq import criterions

    cfg, task, model = build(bert_nmt_data, berts, "ctnmt_tiny", "--asymptotic-distillation",
                             "--criterion", "ctnmt_distill", "--distill-alpha", "0.9",
                             "--label-smoothing", "0.1", "--report-accuracy")
    criterion = criterions.build_criterion(cfg.criterion, task)
    task.load_dataset("valid")
    batch = task.datasets["valid"].collater([task.datasets["valid"][i] for i in range(4)])
    model.eval()
    with torch.no_grad():
        loss, sample_size, log = criterion(model, batch)
        net_output = model(**batch["net_input"])
        nmt_loss, _ = criterion.compute_loss(model, net_output, batch)
    distance = net_output[1]["distill_distance"]
    assert loss.item() == pytest.approx(0.9 * nmt_loss.item() + 0.1 * distance.item() * sample_size,
                                        rel=1e-5)
    assert 0 <= log["n_correct"] <= log["total"] == batch["ntokens"]


def test_slanted_rate_sets_bert_group_lr_and_frozen_bert_is_refused(bert_nmt_data, berts):
    cfg, _, model = build(bert_nmt_data, berts, "ctnmt_tiny", "--optimizer", "adam", "--lr",
                          "0.01", "--lr-scheduler", "rate_scheduled", "--warmup-updates", "4",
                          "--bert-rate-warmup-updates", "4", "--bert-rate-total-updates", "8")
    optimizer, scheduler = fairseq_optimizer(cfg, model)
    groups = optimizer.optimizer.param_groups
    for t in (0, 2, 4, 6, 8, 9):
        scheduler.step_update(t)
        assert groups[1]["lr"] == pytest.approx(slanted_triangular_rate(t, 4, 8) * groups[0]["lr"])
    cfg, _, frozen = build(bert_nmt_data, berts, "ctnmt_tiny", "--freeze-bert", "--optimizer",
                           "adam", "--lr", "0.01", "--lr-scheduler", "rate_scheduled")
    with pytest.raises(ValueError, match="no trainable BERT"):
        fairseq_optimizer(cfg, frozen)
    assert not any(p.requires_grad for p in frozen.encoder.bert_features.bert.parameters())
    frozen.train()
    assert not frozen.encoder.bert_features.bert.training  # frozen features: eval mode


def test_drop_net_by_hand_in_training_and_inference(monkeypatch):
    torch.manual_seed(0)
    attention = BertFusedAttention(4, 2, bert_dim=6, drop_net=1.0, self_attention=True)
    x, bert = torch.randn(3, 2, 4), torch.randn(5, 2, 6)
    bert_padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    attention.bert_input = (bert, bert_padding)
    own = MultiheadAttention.forward(attention, x, x, x)[0]
    via_bert = attention.bert_attn(x, bert, bert, key_padding_mask=bert_padding)[0]
    attention.train()
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        u = float(torch.rand(()))
        torch.manual_seed(seed)
        out = attention(x, x, x)[0]
        expected = own if u < 0.5 else via_bert  # p_net = 1: one path, never the mean
        assert torch.allclose(out, expected, atol=1e-6)
        seen.add(u < 0.5)
    assert seen == {True, False}
    attention.eval()
    assert torch.allclose(attention(x, x, x)[0], (own + via_bert) / 2, atol=1e-6)
    # p_net = 0.5: U < 0.25 -> (1, 0), U > 0.75 -> (0, 1), otherwise (1/2, 1/2)
    for u, weights in ((0.1, (1.0, 0.0)), (0.5, (0.5, 0.5)), (0.9, (0.0, 1.0))):
        monkeypatch.setattr(torch, "rand", lambda *a, u=u: torch.tensor(u))
        assert drop_net_weights(0.5, training=True) == weights
    monkeypatch.undo()
    assert drop_net_weights(0.5, training=False) == (0.5, 0.5)


def test_bert_features_do_not_depend_on_padding(berts):
    features = BertFeatures(load_bert_model(berts[0]), [-1, -2], frozen=True)
    pad = 0
    alone = torch.tensor([[2, 7, 8, 3]])
    right = torch.tensor([[2, 7, 8, 3, pad, pad], [2, 9, 10, 11, 12, 3]])
    left = torch.tensor([[pad, pad, 2, 7, 8, 3], [2, 9, 10, 11, 12, 3]])
    with torch.no_grad():
        a, r, l_ = features(alone, pad), features(right, pad), features(left, pad)
    for layer in (-1, -2):
        assert torch.allclose(r[layer][0, :4], a[layer][0], atol=1e-5)
        assert torch.allclose(l_[layer][0, 2:], a[layer][0], atol=1e-5)
        assert r[layer][0, 4:].abs().sum() == 0  # zero at padding


def test_feature_cache_matches_live_bert_and_refuses_stale_data(bert_nmt_data, berts,
                                                                 tmp_path):
    cache = tmp_path / "cache"
    build_cache(bert_nmt_data, berts[0], "src", "tgt", ["valid"], [-1], cache)
    cfg, task, model = build(bert_nmt_data, berts, "bert_fused_base",
                             "--bert-feature-cache", cache)
    task.load_dataset("valid")
    dataset = task.datasets["valid"]
    batch = dataset.collater([dataset[i] for i in (3, 0, 7, 1)])
    cached = batch["net_input"]["bert_features"]["-1"]
    with torch.no_grad():
        live = model.encoder.bert_features(batch["net_input"]["src_tokens"], task.src_dict.pad())
    assert cached.shape == live[-1].shape and torch.allclose(cached, live[-1], atol=1e-6)
    # a cache whose sentence lengths differ from the data is refused when the split loads
    offsets = np.load(cache / "valid.offsets.npy")
    shifted = offsets.copy()
    shifted[1] += 1  # sentence 0 one row longer, sentence 1 one shorter
    np.save(cache / "valid.offsets.npy", shifted)
    with pytest.raises(ValueError, match=r"valid: sentence 0 has \d+ cached positions but \d+ source"):
        task.load_dataset("valid")
    np.save(cache / "valid.offsets.npy", offsets)
    # the same data re-binarised differently, or another BERT: refused, naming the cause
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["splits"]["valid"]["source"][".bin"] = "0" * 64
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="other binaries"):
        task.load_dataset("valid")
    other = tmp_path / "other"
    shutil.copytree(cache, other)
    manifest["bert_checksum"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="other BERT weights"):
        build(bert_nmt_data, berts, "bert_fused_base", "--bert-feature-cache", other)
    with pytest.raises(ValueError, match="BERT is being trained"):
        build(bert_nmt_data, berts, "ctnmt_tiny", "--bert-feature-cache", cache,
              "--bert-fusion-layer", "-1")


def test_bert_fused_incremental_decoding_and_reordering_match_full_passes(bert_nmt_data, berts):
    """Step-by-step decoding with fairseq's incremental state equals one full pass, also when
    the batch is reordered and shrunk mid-way as beam search does."""
    torch.manual_seed(0)
    _, task, model = build(bert_nmt_data, berts, "bert_fused_base")
    model.eval()
    task.load_dataset("valid")
    dataset = task.datasets["valid"]
    batch = dataset.collater([dataset[i] for i in range(4)])
    net_input = batch["net_input"]
    with torch.no_grad():
        full, _ = model(**net_input)
        encoder_out = model.encoder(net_input["src_tokens"], net_input["src_lengths"])
        incremental, steps = {}, []
        prev = net_input["prev_output_tokens"]
        for t in range(prev.size(1)):
            steps.append(model.decoder(prev[:, :t + 1], encoder_out,
                                       incremental_state=incremental)[0])
        real = prev.ne(task.tgt_dict.pad())  # pads get no position in a step-by-step pass
        assert torch.allclose(torch.cat(steps, dim=1)[real], full[real], atol=1e-5)
        # beam search: two steps, then the batch reordered and shrunk (cached keys and values
        # of both attentions over BERT and the encoder follow), then the rest step by step
        order = torch.tensor([2, 0, 2])
        incremental, steps = {}, []
        for t in range(2):
            steps.append(model.decoder(prev[:, :t + 1], encoder_out,
                                       incremental_state=incremental)[0].index_select(0, order))
        model.decoder.reorder_incremental_state_scripting(incremental, order)
        reordered = model.encoder.reorder_encoder_out(encoder_out, order)
        moved = prev.index_select(0, order)
        for t in range(2, prev.size(1)):
            steps.append(model.decoder(moved[:, :t + 1], reordered,
                                       incremental_state=incremental)[0])
    real = moved.ne(task.tgt_dict.pad())
    expected = full.index_select(0, order)
    assert torch.allclose(torch.cat(steps, dim=1)[real], expected[real], atol=1e-5)
