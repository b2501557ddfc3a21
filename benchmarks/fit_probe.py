"""How well trained models fit, and what cheap combinations would give, on the training
run's own validation slice (never PublicTest): each model's validation top-1, its top-1 on
a sample of its training images without augmentation (how far it fits its data), with
its mirror-image average (flip test-time augmentation), and the ensembles of the models.

    python benchmarks/fit_probe.py --config models/edgefer-mnv3s-v5.toml \\
        models/campaign/edgefer-mnv3s-v5-float models/campaign/edgefer-mnv3s-v4-float \\
        models/edgefer-mnv3s
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--config", required=True, help="the run config whose split to use")
    parser.add_argument("--data", default=os.environ.get("EDGEFER_FER2013", "../shared/fer2013"))
    parser.add_argument("--train-sample", type=int, default=5000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from edgefer.model.store import load_model
    from edgefer.train.config import load_config
    from edgefer.train.run import train_val_split

    train, val = train_val_split(load_config(args.config, data=args.data))
    sample = np.random.default_rng(0).choice(len(train), args.train_sample, replace=False)
    out, probabilities = {}, {}
    for path in args.models:
        model, _, info = load_model(path)
        x = info.preprocess(val.images)
        p = model.predict(x, batch_size=256, verbose=0)
        mirrored = model.predict(x[:, :, ::-1], batch_size=256, verbose=0)
        fit = model.predict(info.preprocess(train.images[sample]), batch_size=256, verbose=0)
        name = str(path)  # not path.name: run folders all end in .../model
        probabilities[name] = (p, p + mirrored)
        out[name] = {"val_top1": _top1(p, val.labels),
                     "val_top1_flip_average": _top1(p + mirrored, val.labels),
                     "train_top1_clean": _top1(fit, train.labels[sample])}
        print(name, json.dumps(out[name]))
    for size in range(2, len(probabilities) + 1):
        for names in itertools.combinations(probabilities, size):
            plain, flipped = (sum(probabilities[n][i] for n in names) for i in (0, 1))
            entry = {"val_top1": _top1(plain, val.labels),
                     "val_top1_flip_average": _top1(flipped, val.labels)}
            out[" + ".join(names)] = entry
            print(" + ".join(names), "ensemble", json.dumps(entry))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


def _top1(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probabilities.argmax(axis=1) == labels))


if __name__ == "__main__":
    main()
