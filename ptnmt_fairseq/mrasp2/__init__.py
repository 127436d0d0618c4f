from ptnmt_fairseq.mrasp2 import criterion, task  # noqa: F401  (register with fairseq)
