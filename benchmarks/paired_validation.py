"""Is one model better than another on the validation slice, or is it noise? Each model
against the first, on the same images: top-1 of both, the difference with its paired
standard error and 95% interval, and McNemar's exact test on the images where exactly
one of the two is right.

    python benchmarks/paired_validation.py --config models/edgefer-mnv3s-v9.toml \\
        models/edgefer-mnv3s runs/edgefer-mnv3s-v9/pqat/model --json reports/paired.json

With 2,870 validation images, one model's top-1 has a standard error of about 0.9 point;
two models of one lineage disagree on far fewer images, so the paired difference is known
better than that, but not to the 0.1-0.3 point that runs of the campaign differ by.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np


def paired_difference(reference_right: np.ndarray, other_right: np.ndarray) -> dict:
    """other - reference, from two models' per-image correctness on the same images."""
    reference_right, other_right = reference_right.astype(bool), other_right.astype(bool)
    n = len(reference_right)
    only_reference = int(np.sum(reference_right & ~other_right))
    only_other = int(np.sum(other_right & ~reference_right))
    difference = (only_other - only_reference) / n
    per_image = other_right.astype(float) - reference_right.astype(float)
    standard_error = float(np.std(per_image, ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    return {"images": n, "reference_top1": float(reference_right.mean()),
            "top1": float(other_right.mean()), "difference": difference,
            "standard_error": standard_error,
            "interval_95": [difference - 1.96 * standard_error,
                            difference + 1.96 * standard_error],
            "only_reference_right": only_reference, "only_this_right": only_other,
            "mcnemar_p": mcnemar_exact_p(only_reference, only_other)}


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar test: the discordant pairs as a fair coin's tosses."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="the first is the reference")
    parser.add_argument("--config", required=True, help="the run config whose split to use")
    parser.add_argument("--data", default=os.environ.get("EDGEFER_FER2013", "../shared/fer2013"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from edgefer.model.store import load_model
    from edgefer.train.config import load_config
    from edgefer.train.run import train_val_split

    _train, val = train_val_split(load_config(args.config, data=args.data))
    right = {}
    for path in args.models:
        model, _, info = load_model(path)
        predicted = model.predict(info.preprocess(val.images), batch_size=256, verbose=0)
        right[str(path)] = predicted.argmax(axis=1) == val.labels
    reference, out = str(args.models[0]), {}
    print(f"reference {reference}: top-1 {right[reference].mean():.2%} on {len(val)} images")
    for name in list(right)[1:]:
        out[name] = paired_difference(right[reference], right[name])
        r = out[name]
        print(f"{name}: top-1 {r['top1']:.2%}, difference {r['difference']:+.2%} "
              f"(SE {r['standard_error']:.2%}, 95% {r['interval_95'][0]:+.2%} to "
              f"{r['interval_95'][1]:+.2%}; right only here {r['only_this_right']}, only in "
              f"the reference {r['only_reference_right']}, McNemar p {r['mcnemar_p']:.2f})")
    if args.json:
        args.json.write_text(json.dumps({"reference": reference, "config": args.config,
                                         "models": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
