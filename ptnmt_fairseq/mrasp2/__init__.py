from ptnmt_fairseq.mrasp2 import criterion  # noqa: F401  (registers with fairseq)
