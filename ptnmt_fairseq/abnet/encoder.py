"""AB-Net's encoder side, shared by AB-Net and both AB-Net-Enc models: X-BERT with an adapter
after each layer (Eq. 4, 5 of Guo et al., NeurIPS 2020), optionally with the [LENGTH] token
(Sec. 3.3), its options and its architecture defaults."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.models import FairseqEncoder

from ptnmt_fairseq.abnet.modules import AdaptedBert, EncoderAdapter, adapter_layer_ids
from ptnmt_fairseq.common.bert.pretrained import bert_option, load_checked_bert


def add_bert_adapter_args(parser, decoder_side):
    """The options of the adapted BERTs; ``decoder_side`` adds Y-BERT's (AB-Net only)."""
    parser.add_argument("--source-bert", type=str, metavar="NAME_OR_DIR",
                        help="source-side HuggingFace BERT (X-BERT), by hub name or directory")
    parser.add_argument("--encoder-adapter-dim", type=int, metavar="N",
                        help="inner dimension d_Aenc of the encoder adapters, Eq. (4) "
                             "(paper: 512 IWSLT, 2048 WMT)")
    parser.add_argument("--encoder-adapter-top-k", type=int, metavar="K",
                        help="adapters after the top K encoder layers only (0: all)")
    parser.add_argument("--adapter-dropout", type=float, metavar="P")
    parser.add_argument("--finetune-bert", action="store_true",
                        help="AB-Net FB: train the BERT weights too (default: frozen)")
    if decoder_side:
        parser.add_argument("--target-bert", type=str, metavar="NAME_OR_DIR",
                            help="target-side HuggingFace BERT (Y-BERT), by hub name or directory")
        parser.add_argument("--decoder-adapter-heads", type=int, metavar="N",
                            help="heads of the cross-attention adapters, Eq. (6)")
        parser.add_argument("--decoder-adapter-top-k", type=int, metavar="K",
                            help="cross-attention adapters after the top K decoder layers (0: all)")
        parser.add_argument("--max-length-classes", type=int, metavar="N",
                            help="rows of the [LENGTH] embedding = length classes (authors: 1024)")


def bert_adapter_encoder_defaults(args):
    """The one set of X-BERT-with-adapters defaults: the WMT setting (Sec. 4.1, d_Aenc = 2048),
    adapters after every layer, dropout 0.1, BERTs frozen."""
    args.encoder_adapter_dim = getattr(args, "encoder_adapter_dim", 2048)
    args.encoder_adapter_top_k = getattr(args, "encoder_adapter_top_k", 0)
    args.adapter_dropout = getattr(args, "adapter_dropout", 0.1)
    args.finetune_bert = getattr(args, "finetune_bert", False)
    args.source_bert = getattr(args, "source_bert", None)


def freeze_berts(model, finetune):
    """Freeze every BERT weight unless AB-Net FB; adapters, [LENGTH] and fresh heads train."""
    for module in (m for m in model.modules() if isinstance(m, AdaptedBert)):
        module.bert.requires_grad_(finetune)


def build_source_encoder(args, dictionary, with_length_token):
    """``AbnetEncoder`` around ``--source-bert``, after checking that the source dictionary is
    that BERT's vocabulary."""
    source_bert = bert_option(args, "--source-bert")
    x_bert = load_checked_bert(source_bert, "--source-bert", dictionary, "source")
    return AbnetEncoder(args, dictionary, x_bert, with_length_token)


class AbnetEncoder(FairseqEncoder):
    """X-BERT with encoder adapters (Eq. 4, 5); with ``with_length_token``, the [LENGTH] token
    of Sec. 3.3 is prepended and its output gives ``length_logits`` (B x max_length_classes)."""

    def __init__(self, args, dictionary, bert, with_length_token):
        super().__init__(dictionary)
        layers = adapter_layer_ids(bert.config.num_hidden_layers, args.encoder_adapter_top_k)
        adapters = nn.ModuleDict({
            str(i): EncoderAdapter(bert.config.hidden_size, args.encoder_adapter_dim,
                                   args.adapter_dropout, bert.config.layer_norm_eps)
            for i in layers
        })
        self.bert = AdaptedBert(bert, adapters)
        self.padding_idx = dictionary.pad()
        self.embed_dim = bert.config.hidden_size  # what a decoder attends over
        self.max_source_positions = bert.config.max_position_embeddings
        # Sec. 3.3: "We add a special [LENGTH] token to the encoder input, and take its encoder
        # output as the representation, based on which the target length is predicted."
        # Authors: one nn.Embedding(1024, d); row 0 is the input token, the whole table is the
        # output projection, and class 0 (an empty target) is impossible.
        self.embed_lengths = (
            nn.Embedding(args.max_length_classes, bert.config.hidden_size)
            if with_length_token else None
        )
        if self.embed_lengths is not None:
            nn.init.normal_(self.embed_lengths.weight, std=0.02)

    def forward(self, src_tokens, src_lengths=None, **kwargs):
        keep = src_tokens.ne(self.padding_idx)  # B x S
        prefix = None
        if self.embed_lengths is not None:
            prefix = self.embed_lengths.weight[:1].expand(src_tokens.size(0), 1, -1)
        hidden = self.bert(src_tokens, keep, prefix=prefix)  # B x (P+S) x C
        length_logits = []
        if self.embed_lengths is not None:
            logits = F.linear(hidden[:, 0], self.embed_lengths.weight)  # B x max_length_classes
            length_logits = [logits.masked_fill(torch.arange(logits.size(1),
                                                             device=logits.device) == 0,
                                                float("-inf"))]
            hidden = hidden[:, 1:]
        return {
            "encoder_out": [hidden.transpose(0, 1)],  # S x B x C
            "encoder_padding_mask": [~keep],  # B x S
            "encoder_embedding": [],
            "encoder_states": [],
            "src_tokens": [],
            "src_lengths": [],
            "length_logits": length_logits,  # B x max_length_classes
        }

    def reorder_encoder_out(self, encoder_out, new_order):
        return {
            "encoder_out": [encoder_out["encoder_out"][0].index_select(1, new_order)],
            "encoder_padding_mask": [encoder_out["encoder_padding_mask"][0].index_select(0, new_order)],
            "encoder_embedding": [],
            "encoder_states": [],
            "src_tokens": [],
            "src_lengths": [],
            "length_logits": [x.index_select(0, new_order) for x in encoder_out["length_logits"]],
        }

    def max_positions(self):
        return self.max_source_positions  # [LENGTH] bypasses the position embeddings
