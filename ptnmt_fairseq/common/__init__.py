"""Pieces shared by the methods, one place each.

Base files (any family or method may import them): ``compat.py`` (every version fix),
``scoring.py``, ``modeling.py`` (masks, pooling, parameter counts), ``language_tokens.py``,
``paired_sizes.py``, ``contrastive.py``. Families, which import the base files but never each
other: ``bert/`` (BERT loading, BERT dictionaries, ``translation_bert``), ``speech/`` (audio,
manifests and triples, wav2vec 2.0) and ``multilingual/`` (``translation_multi_langtok``, RAS).
``common`` imports no method; the import-linter contracts in ``setup.cfg`` check all of this.
"""
