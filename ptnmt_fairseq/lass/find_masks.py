"""Write each direction's LaSS mask from its fine-tuned checkpoint (magnitude pruning per tensor).

    python -m ptnmt_fairseq.lass.find_masks --alpha 0.3 --out MASKS \\
        de-en=ft.de-en/checkpoint_best.pt en-de=ft.en-de/checkpoint_best.pt ...

writes ``MASKS/de-en.mask.npz`` etc. (format: ``ptnmt_fairseq/lass/masks.py``). ``alpha`` is the
fraction pruned in every weight matrix (NLP-Playground/LaSS ``toolbox/generate_mask.py``
``--mask-prob``); the authors sweep it, the paper's analysis uses values from 0.1 to 0.9.
Checkpoints are read by fairseq's loader, under the weights-only allow-list of training.
"""
import argparse
import json
import sys

from ptnmt_fairseq.lass.masks import DirectionMask, mask_path, split_direction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", nargs="+", metavar="DIRECTION=CHECKPOINT",
                        help="a direction SRC-TGT and its fine-tuned fairseq checkpoint")
    parser.add_argument("--alpha", type=float, required=True,
                        help="fraction of each weight matrix pruned, in [0, 1)")
    parser.add_argument("--out", required=True, help="mask directory (--lass-mask-dir)")
    parser.add_argument("--shared-output-projection", action="store_true",
                        help="leave the output projection out of the masks "
                             "(train with --lass-shared-output-projection)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from fairseq import checkpoint_utils

    from ptnmt_fairseq.common import compat

    compat.apply()  # checkpoint loading under the weights-only allow-list

    jobs = []
    for item in args.pairs:
        direction, sep, checkpoint = item.partition("=")
        if not sep or not checkpoint:
            sys.exit(f"find_masks: {item!r} is not DIRECTION=CHECKPOINT")
        split_direction(direction)
        jobs.append((direction, checkpoint))
    for direction, checkpoint in jobs:
        state = checkpoint_utils.load_checkpoint_to_cpu(checkpoint)
        mask = DirectionMask.from_state_dict(direction, state["model"], args.alpha, checkpoint,
                                             args.shared_output_projection)
        path = mask_path(args.out, direction)
        mask.save(path)
        print(json.dumps({"direction": direction, "mask": str(path), "alpha": args.alpha,
                          "tensors": len(mask.masks), "kept": round(mask.kept_fraction(), 6)}))


if __name__ == "__main__":
    main()
