from ptnmt_fairseq.chimera import criterion, model, task  # noqa: F401  (register with fairseq)
