"""Top-1 accuracy of each export on PublicTest and their pairwise top-1 agreement: strict
(same argmax) and as the parity gate counts it (a pick within one INT8 output step, 1/256,
of the other model's top probability is a tie, not a disagreement).

    python benchmarks/int8_agreement.py exports/edgefer-mnv3s-int8.tflite \\
        exports/edgefer-mnv3s-int8.onnx exports/edgefer-mnv3s-int8.xml --data ../shared/fer2013
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from edgefer.data import load_split
from edgefer.export.parity import compare
from edgefer.runtimes import RuntimeOptions, load_runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    test = load_split(args.data, "test")
    predicted = {}
    for path in args.models:
        runtime = load_runtime(path, RuntimeOptions(threads=2))
        probs = np.concatenate([runtime.predict_faces(test.images[i:i + 256])
                                for i in range(0, len(test), 256)])
        predicted[path.name] = probs
    pairs = list(itertools.combinations(predicted, 2))
    out = {"images": len(test),
           "top1": {k: float(np.mean(v.argmax(1) == test.labels)) for k, v in predicted.items()},
           "agreement": {f"{a} vs {b}": float(np.mean(predicted[a].argmax(1)
                                                      == predicted[b].argmax(1)))
                         for a, b in pairs},
           "agreement_ties_allowed": {f"{a} vs {b}": compare(predicted[a], predicted[b],
                                                             0.0).agreement
                                      for a, b in pairs}}
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
