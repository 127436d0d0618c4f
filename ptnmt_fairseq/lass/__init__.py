"""LaSS: language-specific sub-networks for multilingual translation (Lin et al., ACL 2021), on
the multilingual family's task: ``transformer_lass`` (model), ``translation_lass`` (task),
``python -m ptnmt_fairseq.lass.find_masks`` and ``python -m ptnmt_fairseq.lass.analyze``."""
from ptnmt_fairseq.lass import model, task  # noqa: F401
