"""ptnmt_fairseq: pre-training methods for NMT and speech translation as a fairseq plugin.

Loaded by ``fairseq-train --user-dir ptnmt_fairseq``. Importing the package first applies the
compatibility fixes (``common/compat.py``), then the tasks shared by a family (``common/bert``,
``common/multilingual``) and every method folder, so that their tasks, models, architectures and
criterions register with fairseq.
"""
from ptnmt_fairseq.common import compat

compat.apply()

__version__ = "0.1.0"

# Shared tasks first (translation_bert, translation_multi_langtok), then one package per method.
from ptnmt_fairseq.common.bert import task as _bert_task  # noqa: E402,F401
from ptnmt_fairseq.common.multilingual import task as _multilingual_task  # noqa: E402,F401
from ptnmt_fairseq import abnet  # noqa: E402,F401
from ptnmt_fairseq import xstnet  # noqa: E402,F401
from ptnmt_fairseq import mrasp2  # noqa: E402,F401
from ptnmt_fairseq import lass  # noqa: E402,F401
from ptnmt_fairseq import chimera  # noqa: E402,F401
from ptnmt_fairseq import cmlm_kd  # noqa: E402,F401
from ptnmt_fairseq import ctnmt  # noqa: E402,F401
from ptnmt_fairseq import bert_fused  # noqa: E402,F401
from ptnmt_fairseq import mass  # noqa: E402,F401
