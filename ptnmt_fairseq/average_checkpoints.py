"""Average the weights of fairseq checkpoints, as fairseq's ``scripts/average_checkpoints.py``.

Usage:
  python -m ptnmt_fairseq.average_checkpoints --inputs A.pt B.pt ... --output avg.pt
  python -m ptnmt_fairseq.average_checkpoints --inputs SAVE_DIR --num-epoch-checkpoints 10 --output avg.pt
  python -m ptnmt_fairseq.average_checkpoints --inputs SAVE_DIR --num-update-checkpoints 5 \\
      [--checkpoint-upper-bound 5000] --output avg.pt

``--num-epoch-checkpoints N`` takes the N newest ``checkpointE.pt`` of the one folder given,
``--num-update-checkpoints N`` the N newest ``checkpoint_E_U.pt`` (``--save-interval-updates``);
``--checkpoint-upper-bound`` ignores later epochs (updates). The output is the first input with
the mean of all the inputs' model tensors; decode it with ``fairseq-generate --path avg.pt``.
Checkpoints are read under fairseq's weights-only allow-list; checkpoints of different models
are refused. The work is in ``ptnmt_fairseq/common/checkpoints.py``.
"""
import argparse
import logging
import sys

logger = logging.getLogger("ptnmt_fairseq.average_checkpoints")


def selected_count(args):
    """N of --num-epoch-checkpoints / --num-update-checkpoints (None: --inputs are files)."""
    chosen = [n for n in (args.num_epoch_checkpoints, args.num_update_checkpoints) if n is not None]
    return chosen[0] if chosen else None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", required=True, nargs="+",
                        help="checkpoint files, or one folder with --num-*-checkpoints")
    parser.add_argument("--output", required=True, metavar="FILE",
                        help="the averaged checkpoint (written atomically)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--num-epoch-checkpoints", type=int, metavar="N",
                       help="average the N newest checkpointE.pt of the folder --inputs")
    which.add_argument("--num-update-checkpoints", type=int, metavar="N",
                       help="average the N newest checkpoint_E_U.pt of the folder --inputs")
    parser.add_argument("--checkpoint-upper-bound", type=int, metavar="K",
                        help="with --num-*-checkpoints: no epoch (update) later than K")
    args = parser.parse_args(argv)
    count = selected_count(args)
    if args.checkpoint_upper_bound is not None and count is None:
        parser.error("--checkpoint-upper-bound needs --num-epoch-checkpoints or "
                     "--num-update-checkpoints")
    if count is not None and len(args.inputs) != 1:
        parser.error("with --num-*-checkpoints, --inputs is one folder")
    if count is not None and count < 1:
        parser.error("--num-*-checkpoints must be at least 1")
    return args


def main(argv=None):
    import ptnmt_fairseq  # noqa: F401  (the compat fixes: the weights-only allow-list)
    from ptnmt_fairseq.common import checkpoints

    args = parse_args(argv)
    logging.basicConfig(format="%(levelname)s | %(name)s | %(message)s", level=logging.INFO)
    paths = args.inputs
    count = selected_count(args)
    try:
        if count is not None:
            paths = checkpoints.last_checkpoints(
                args.inputs[0], count, update_based=args.num_update_checkpoints is not None,
                upper_bound=args.checkpoint_upper_bound)
        state = checkpoints.average_checkpoints(paths)
    except (ValueError, OSError) as error:  # OSError: a missing file, or a folder without N
        print(f"average_checkpoints: {error}", file=sys.stderr)
        return 1
    checkpoints.save_checkpoint_atomically(state, args.output)
    logger.info(f"averaged {len(paths)} checkpoints ({', '.join(map(str, paths))}) "
                f"into {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
