"""Language tokens shared by the multilingual and speech methods.

fairseq's speech-to-text code names them ``<lang:xx>`` (``SpeechToTextDataset.LANG_TAG_TEMPLATE``);
we keep that spelling so dictionaries made for fairseq's S2T recipes work here too. A missing
token is an error naming the dictionary and where the language came from: fairseq's own
``Dictionary.index`` would silently return [UNK] and train every language with the same tag.
"""
import numpy as np
import torch
from fairseq.data import data_utils

from ptnmt_fairseq.common.paired_sizes import PairedSizesDataset
from ptnmt_fairseq.common.scoring import warn_damaged_references

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


def strip_tags(hypos, tags):
    """Drop tag tokens (and their positional scores) that an undertrained model may still
    generate, so that fairseq-generate, fairseq-interactive and the hub interface, which
    detokenise hypotheses each in their own way, all output the same text."""
    tags = torch.tensor(sorted(tags))
    for sentence in hypos:
        for hypo in sentence:
            keep = ~torch.isin(hypo["tokens"], tags.to(hypo["tokens"].device))
            if not keep.all():
                hypo["tokens"] = hypo["tokens"][keep]
                if hypo.get("positional_scores") is not None:
                    hypo["positional_scores"] = hypo["positional_scores"][keep]
                hypo["alignment"] = None
    return hypos


class TaggedInferenceDataset(PairedSizesDataset):
    """Text from ``fairseq-interactive`` or the hub interface (``encode_line`` ids, ending in
    </s>) as a tag-as-bos task reads it: ``src_tag`` x </s> on the encoder, ``tgt_tag`` as the
    decoder's first token."""

    uses_audio = False
    shuffle = False

    def __init__(self, src_tokens, src_tag: int, tgt_tag: int, pad: int):
        self.sources = [torch.cat([t.new_tensor([src_tag]), t]) for t in src_tokens]
        self.tgt_tag, self.pad = tgt_tag, pad
        self.src_sizes = np.array([len(s) for s in self.sources])
        self.tgt_sizes = np.zeros_like(self.src_sizes)

    def __getitem__(self, index):
        return {"id": index, "source": self.sources[index]}

    def __len__(self):
        return len(self.sources)

    def collater(self, samples):
        if not samples:
            return {}
        return collate_tagged(samples, self.pad, torch.full((len(samples), 1), self.tgt_tag),
                              ntokens=sum(len(s["source"]) for s in samples))


def collate_tagged(samples, pad, prev_output_tokens, ntokens):
    """A batch of ``{"id", "source"}`` items whose decoder input (B x T) starts with a tag."""
    sources = [s["source"] for s in samples]
    return {
        "id": torch.tensor([s["id"] for s in samples]),
        "nsentences": len(samples),
        "ntokens": ntokens,
        "net_input": {
            "src_tokens": data_utils.collate_tokens(sources, pad),
            "src_lengths": torch.tensor([len(s) for s in sources]),
            "prev_output_tokens": prev_output_tokens,
        },
    }


class TagAsBosGenerationMixin:
    """For tasks whose decoder input starts with the output-language tag in place of bos:
    fairseq's generator gets that tag as ``bos_token`` and strips every tag from the output.
    ``one_language_hint`` says how to split a batch that mixes output languages.
    ``fairseq-interactive`` and the hub interface work through ``inference_tags`` (the ids of
    the source and target tags), which the task provides."""

    one_language_hint = "generate one output language at a time"

    def inference_tags(self):
        """(source tag id, target tag id) for raw input; the task defines it."""
        raise NotImplementedError(f"{type(self).__name__} does not translate raw input")

    def direction_tags(self, template: str = LANG_TAG_TEMPLATE):
        """Tag ids of ``-s``/``-t`` (``cfg.source_lang``, ``cfg.target_lang``) for raw input."""
        langs = (self.cfg.source_lang, self.cfg.target_lang)
        if not all(langs):
            raise ValueError("translating raw input needs its languages: pass -s SRC -t TGT "
                             "(hub: source_lang=..., target_lang=...)")
        return tuple(lang_tag_index(self.target_dictionary, lang, f"-s/-t {lang}", template)
                     for lang in langs)

    def build_dataset_for_inference(self, src_tokens, src_lengths, constraints=None, **kwargs):
        if constraints is not None:
            raise ValueError("lexical constraints are not supported by this task")
        src_tag, tgt_tag = self.inference_tags()
        return TaggedInferenceDataset(src_tokens, src_tag, tgt_tag, self.source_dictionary.pad())

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None,
                        **kwargs):
        if getattr(args, "prefix_size", 0):
            raise ValueError("the output-language tag is the decoder's first input already; "
                             "drop --prefix-size")
        extra_gen_cls_kwargs = dict(extra_gen_cls_kwargs or {})
        extra_gen_cls_kwargs.setdefault("symbols_to_strip_from_output",
                                        tag_ids(self.target_dictionary))
        return super().build_generator(models, args, seq_gen_cls, extra_gen_cls_kwargs, **kwargs)

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        warn_damaged_references(sample, self.target_dictionary, type(self).__name__)
        if "prev_output_tokens" not in sample["net_input"]:  # fairseq-interactive's own batches
            return self.generate_with_tag(generator, models, sample, self.inference_tags()[1],
                                          prefix_tokens, constraints)
        first = sample["net_input"]["prev_output_tokens"][:, 0].unique()
        if first.numel() != 1:
            tags = [self.target_dictionary[int(t)] for t in first]
            raise ValueError(f"one batch asks for several output languages {tags}: "
                             f"{self.one_language_hint}")
        return self.generate_with_tag(generator, models, sample, int(first), prefix_tokens,
                                      constraints)

    def generate_with_tag(self, generator, models, sample, tag, prefix_tokens, constraints):
        with torch.no_grad():
            hypos = generator.generate(models, sample, prefix_tokens=prefix_tokens,
                                       constraints=constraints, bos_token=tag)
        return strip_tags(hypos, tag_ids(self.target_dictionary))
