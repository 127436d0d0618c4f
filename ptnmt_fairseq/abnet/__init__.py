"""AB-Net (Guo et al., NeurIPS 2020): BERT + adapters, Mask-Predict decoding; AB-Net-Enc."""
from ptnmt_fairseq.abnet import model, model_enc, task  # noqa: F401  (register with fairseq)
