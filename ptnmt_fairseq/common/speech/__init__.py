"""The speech family: audio reading and checks, fairseq speech-to-text manifests and
<speech, transcript, translation> triples, wav2vec 2.0 loading. Used by XSTNet; next by Chimera."""
