from ptnmt_fairseq.mrasp import task  # noqa: F401  (registers with fairseq)
