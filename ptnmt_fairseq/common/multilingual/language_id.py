"""Off-target translation: how often a system writes in a language other than the one asked for,
the known failure of zero-shot multilingual NMT (Zhang et al., ACL 2020; mRASP2's zero-shot
evaluation). Languages are identified with py3langid (a maintained fork of langid.py, Lui and
Baldwin, ACL 2012), its model restricted to the corpus languages: on short strings an
unrestricted identifier names many unrelated languages.
"""
from collections import Counter
from functools import lru_cache


@lru_cache(maxsize=None)
def language_identifier(languages: tuple):
    """py3langid's normalised-probability identifier, restricted to ``languages`` (ISO 639-1)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(languages))
    return identifier


def identify(sentences, languages):
    """The language of each sentence, one of ``languages``; "" for an empty sentence."""
    identifier = language_identifier(tuple(sorted(languages)))
    return [identifier.classify(s)[0] if s.strip() else "" for s in sentences]


def off_target(sentences, target: str, languages) -> dict:
    """``{"rate": % of sentences not identified as ``target``, "languages": {lang: count}}``
    (empty outputs count as off-target). ValueError when ``target`` is not in ``languages``."""
    if target not in languages:
        raise ValueError(f"target language {target!r} is not among {sorted(languages)}")
    found = identify(sentences, languages)
    wrong = sum(lang != target for lang in found)
    return {"rate": round(100.0 * wrong / max(len(found), 1), 2),
            "languages": dict(Counter(found).most_common())}
