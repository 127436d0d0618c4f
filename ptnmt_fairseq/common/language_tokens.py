"""Language tokens shared by the multilingual and speech methods.

fairseq's speech-to-text code names them ``<lang:xx>`` (``SpeechToTextDataset.LANG_TAG_TEMPLATE``);
we keep that spelling so dictionaries made for fairseq's S2T recipes work here too. A missing
token is an error naming the dictionary and where the language came from: fairseq's own
``Dictionary.index`` would silently return [UNK] and train every language with the same tag.
"""
import torch

LANG_TAG_TEMPLATE = "<lang:{}>"
AUDIO_TAG = "<audio>"  # XSTNet's source-side tag for speech input (Ye et al., 2021, Table 1)


def lang_tag(lang: str, template: str = LANG_TAG_TEMPLATE) -> str:
    """``template`` may use ``{}`` (as written) or ``{LANG}`` (upper case, mRASP's LANG_TOK_XX)."""
    return template.format(lang, LANG=lang.upper())


def tag_index(dictionary, tag: str, where: str = "") -> int:
    """Id of ``tag`` in ``dictionary``; a clear error when the dictionary lacks it."""
    index = dictionary.indices.get(tag)
    if index is None:
        source = getattr(dictionary, "source", None) or "the dictionary"
        known = sorted(t for t in dictionary.indices
                       if t.startswith(("<lang:", "LANG_TOK_")) or t == AUDIO_TAG)
        raise ValueError(
            f"{tag} is not in {source}{' (needed by ' + where + ')' if where else ''}; "
            f"its tags are {known or 'none'}. Add a line '{tag} 1' to the dictionary "
            "(the data preparation scripts in examples/data write one per language)."
        )
    return index


def lang_tag_index(dictionary, lang: str, where: str = "", template: str = LANG_TAG_TEMPLATE) -> int:
    return tag_index(dictionary, lang_tag(lang, template), where)


def tag_ids(dictionary):
    """Ids of every language/audio tag in ``dictionary``: never targets, so stripped from any
    output an undertrained model might still give them in."""
    return {i for t, i in dictionary.indices.items()
            if t.startswith(("<lang:", "LANG_TOK_")) or t == AUDIO_TAG}


def shift_right(tokens, first: int):
    """Decoder input for ``tokens`` (which end in eos): ``first`` (a language tag, in place of
    fairseq's bos) then all but the last token."""
    return torch.cat([tokens.new_tensor([first]), tokens[:-1]])


class TagAsBosGenerationMixin:
    """For tasks whose decoder input starts with the output-language tag in place of bos:
    fairseq's generator gets that tag as ``bos_token`` and strips every tag from the output.
    ``one_language_hint`` says how to split a batch that mixes output languages."""

    one_language_hint = "generate one output language at a time"

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None):
        if getattr(args, "prefix_size", 0):
            raise ValueError("the output-language tag is the decoder's first input already; "
                             "drop --prefix-size")
        extra_gen_cls_kwargs = dict(extra_gen_cls_kwargs or {})
        extra_gen_cls_kwargs.setdefault("symbols_to_strip_from_output",
                                        tag_ids(self.target_dictionary))
        return super().build_generator(models, args, seq_gen_cls, extra_gen_cls_kwargs)

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        first = sample["net_input"]["prev_output_tokens"][:, 0].unique()
        if first.numel() != 1:
            tags = [self.target_dictionary[int(t)] for t in first]
            raise ValueError(f"one batch asks for several output languages {tags}: "
                             f"{self.one_language_hint}")
        with torch.no_grad():
            return generator.generate(models, sample, prefix_tokens=prefix_tokens,
                                      constraints=constraints, bos_token=int(first))
