"""Language tokens shared by the multilingual and speech methods.

fairseq's speech-to-text code names them ``<lang:xx>`` (``SpeechToTextDataset.LANG_TAG_TEMPLATE``);
we keep that spelling so dictionaries made for fairseq's S2T recipes work here too. A missing
token is an error naming the dictionary and where the language came from: fairseq's own
``Dictionary.index`` would silently return [UNK] and train every language with the same tag.
"""
LANG_TAG_TEMPLATE = "<lang:{}>"
AUDIO_TAG = "<audio>"  # XSTNet's source-side tag for speech input (Ye et al., 2021, Table 1)


def lang_tag(lang: str) -> str:
    return LANG_TAG_TEMPLATE.format(lang)


def tag_index(dictionary, tag: str, where: str = "") -> int:
    """Id of ``tag`` in ``dictionary``; a clear error when the dictionary lacks it."""
    index = dictionary.indices.get(tag)
    if index is None:
        source = getattr(dictionary, "source", None) or "the dictionary"
        known = sorted(t for t in dictionary.indices if t.startswith("<lang:") or t == AUDIO_TAG)
        raise ValueError(
            f"{tag} is not in {source}{' (needed by ' + where + ')' if where else ''}; "
            f"its tags are {known or 'none'}. Add a line '{tag} 1' to the dictionary "
            "(examples/data/prepare_speech_vocab.py writes one per language)."
        )
    return index


def lang_tag_index(dictionary, lang: str, where: str = "") -> int:
    return tag_index(dictionary, lang_tag(lang), where)
