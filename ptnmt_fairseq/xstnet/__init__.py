from ptnmt_fairseq.xstnet import criterion, model, task  # noqa: F401  (register with fairseq)
