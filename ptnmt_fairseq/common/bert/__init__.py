"""The BERT family: pre-trained BERT loading and vocabulary checks, BERT dictionaries (fairseq ids
are BERT ids) and the ``translation_bert`` task. Used by AB-Net; next by C-MLM, CTNMT, BERT-fused."""
