"""Tiny HuggingFace BERTs created by the tests and loaded through the real loading code."""
import json
from pathlib import Path

import torch

SOURCE_LETTERS = list("abcdefghijklmnop")
TARGET_LETTERS = list("ABCDEFGHIJKLMNOP")


def make_tiny_bert(directory, tokens, lowercase=True, hidden=32, layers=2, heads=2, seed=0,
                   with_mlm_head=True):
    """Save a random BertForMaskedLM (or a headless BertModel) plus tokenizer files."""
    from transformers import BertConfig, BertForMaskedLM, BertModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokens), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=2 * hidden,
                        max_position_embeddings=64, pad_token_id=tokens.index("[PAD]"))
    model = (BertForMaskedLM if with_mlm_head else BertModel)(config)
    model.save_pretrained(directory)
    (directory / "vocab.txt").write_text("\n".join(tokens) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": lowercase, "tokenizer_class": "BertTokenizer"}))
    return directory


def source_vocab():
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + SOURCE_LETTERS


def target_vocab():
    # Another layout on purpose: [MASK] is id 5, as in bert-base-german-cased.
    return ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + TARGET_LETTERS
