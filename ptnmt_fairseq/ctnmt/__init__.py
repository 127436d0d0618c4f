"""CTNMT (Yang et al., AAAI 2020): asymptotic distillation, dynamic switch and rate-scheduled
learning of a source BERT inside a Transformer (``model.py``, ``criterion.py``,
``lr_scheduler.py``)."""
from ptnmt_fairseq.ctnmt import criterion, lr_scheduler, model  # noqa: F401
