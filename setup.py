from setuptools import find_packages, setup

setup(
    name="ptnmt-fairseq",
    version="0.1.0",
    description="Pre-training methods for NMT and speech translation as a fairseq plugin",
    packages=find_packages(include=["ptnmt_fairseq", "ptnmt_fairseq.*"]),
    python_requires=">=3.11,<3.13",
    # Exact pins live in requirements/constraints.txt (see README, Dependencies).
    install_requires=[
        "torch==2.9.1",
        "torchaudio==2.9.1",
        "ve-fairseq==0.12.3",
        "numpy>=1.26",
        "sentencepiece",
        "sacrebleu>=2.0",
        "soundfile",
        "transformers>=4.40",
    ],
)
