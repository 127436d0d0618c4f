"""BERT-fused NMT (Zhu et al., ICLR 2020): attention over a frozen source BERT in every encoder
and decoder layer, drop-net, and a strict warm start from a trained Transformer (``model.py``)."""
from ptnmt_fairseq.bert_fused import model  # noqa: F401
