from ptnmt_fairseq.cmlm_kd import criterion, task, teacher  # noqa: F401  (register with fairseq)
