"""MASS (Song et al., ICML 2019) and CSP (Yang et al., EMNLP 2020): span-masked sequence-to-sequence
pre-training on monolingual text, then supervised or back-translation fine-tuning."""
from ptnmt_fairseq.mass import model, task  # noqa: F401
