"""The speech family, used by XSTNet and Chimera: audio reading and checks (``audio.py``), fairseq
speech-to-text manifests and <speech, transcript, translation> triples (``dataset.py``), the
acoustic front-ends (``frontend.py``: wav2vec 2.0 from ``wav2vec2.py`` + shrinker, or
filterbanks from ``fbank.py``), the shared task (``task.py``: stages, external MT, batching,
generation) and the multi-task loss (``criterion.py``)."""
