"""AB-Net (Guo et al., NeurIPS 2020), in process: the adapters by hand, the CMLM masking, the
Mask-Predict canvas, BERT dictionaries (the tiny BERTs of ``conftest.berts``)."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ptnmt_fairseq  # noqa: F401
from ptnmt_fairseq.abnet.mask_predict import masked_canvas
from ptnmt_fairseq.abnet.modules import CrossAttentionAdapter, EncoderAdapter, adapter_layer_ids
from ptnmt_fairseq.abnet.task import cmlm_random_mask
from tiny_bert import target_vocab


# ---------------------------------------------------------------------------------------------
# the adapter math
# ---------------------------------------------------------------------------------------------
def test_encoder_adapter_is_eq4_by_hand():
    adapter = EncoderAdapter(hidden_dim=2, adapter_dim=3, dropout=0.0).eval()
    with torch.no_grad():
        adapter.layer_norm.weight.copy_(torch.tensor([1.0, 2.0]))
        adapter.layer_norm.bias.copy_(torch.tensor([0.0, 1.0]))
        adapter.w1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        adapter.w2.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [0.0, 2.0, -1.0]]))
    h = torch.tensor([[[3.0, 1.0]]])
    # LN([3, 1]) = [1, -1] (eps ~ 0) -> *[1, 2] + [0, 1] = [1, -1]
    # Z = W1 [1, -1] = [1, -1, 2]; ReLU = [1, 0, 2]; W2 ReLU = [3, -2]; H + . = [6, -1]
    assert torch.allclose(adapter(h), torch.tensor([[[6.0, -1.0]]]), atol=1e-5)
    assert adapter.w1.bias is None and adapter.w2.bias is None


def test_cross_attention_adapter_by_hand_and_ignores_padding():
    torch.manual_seed(0)
    adapter = CrossAttentionAdapter(hidden_dim=4, encoder_dim=6, heads=1, dropout=0.0).eval()
    hidden = torch.randn(1, 2, 4)
    enc = torch.randn(3, 1, 6)  # S x B x C_enc
    pad = torch.tensor([[False, False, True]])
    out = adapter(hidden, enc, pad)
    att = adapter.attention
    q = F.linear(hidden[0], att.q_proj.weight, att.q_proj.bias) * (4 ** -0.5)
    k = F.linear(enc[:2, 0], att.k_proj.weight, att.k_proj.bias)
    v = F.linear(enc[:2, 0], att.v_proj.weight, att.v_proj.bias)
    context = torch.softmax(q @ k.T, -1) @ v
    expected = F.layer_norm(hidden[0] + F.linear(context, att.out_proj.weight, att.out_proj.bias),
                            (4,), adapter.layer_norm.weight, adapter.layer_norm.bias)
    assert torch.allclose(out[0], expected, atol=1e-5)
    enc2 = enc.clone()
    enc2[2] = 100.0  # a padded encoder position must not matter
    assert torch.allclose(adapter(hidden, enc2, pad), out, atol=1e-6)


def test_adapter_top_k_layers():
    assert adapter_layer_ids(6, 0) == [0, 1, 2, 3, 4, 5]
    assert adapter_layer_ids(6, 2) == [4, 5]
    assert adapter_layer_ids(6, 9) == [0, 1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------------------------
# masking and the length canvas
# ---------------------------------------------------------------------------------------------
def test_cmlm_mask_counts_are_uniform_and_use_mask_token():
    bos, eos, pad, mask = 3, 4, 0, 5
    torch.manual_seed(0)
    target = torch.tensor([[bos, 10, 11, 12, 13, eos, pad, pad]] * 4000)
    noised = cmlm_random_mask(target, bos, eos, pad, mask)
    counts = noised.eq(mask).sum(1)
    assert counts.min() == 1 and counts.max() == 4  # U{1..|y|}, |y| = 4
    freq = torch.bincount(counts, minlength=5)[1:].float() / len(counts)
    assert torch.allclose(freq, torch.full((4,), 0.25), atol=0.03)
    # only real tokens change, and only into [MASK] (never [UNK])
    changed = noised.ne(target)
    assert noised[changed].eq(mask).all()
    assert not changed[:, [0, 5, 6, 7]].any()


def test_masked_canvas_counts_cls_and_sep():
    tokens = masked_canvas(torch.tensor([4, 2, 1]), bos=3, eos=4, pad=0, mask=5)
    assert tokens.tolist() == [[3, 5, 5, 4], [3, 4, 0, 0], [3, 4, 0, 0]]


def test_malformed_dictionary_names_file_and_line(tmp_path):
    from ptnmt_fairseq.common.bert.dictionary import BertDictionary

    path = tmp_path / "dict.en.txt"
    path.write_text("[PAD] 1\n[UNK] 1\nbroken line here\n")
    with pytest.raises(ValueError, match=r"dict.en.txt:3: expected 'TOKEN COUNT'"):
        BertDictionary.load(path)
    path.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n[PAD]\n")
    with pytest.raises(ValueError, match=r"dict.en.txt:6: duplicate token '\[PAD\]'"):
        BertDictionary.from_vocab_txt(path)


def test_bert_dictionary_ids_are_bert_ids(berts):
    from ptnmt_fairseq.common.bert.dictionary import BertDictionary

    d = BertDictionary.from_vocab_txt(Path(berts[1]) / "vocab.txt")
    assert d.symbols == target_vocab()
    assert (d.pad(), d.unk(), d.bos(), d.eos(), d.mask()) == (0, 2, 3, 4, 5)
    assert d.encode_line("A B [MASK] Z", add_if_not_exist=False).tolist() == [6, 7, 5, 2, 4]

