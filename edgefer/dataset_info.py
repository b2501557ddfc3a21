"""``edgefer data info``: what a FER2013 source holds, and what is wrong with it."""

from __future__ import annotations

import os

from edgefer.data import available_splits, load_split
from edgefer.errors import DataError
from edgefer.labels import CLASS_NAMES, IMAGE_SIZE

_MAX_LISTED = 20


def describe(source: str | os.PathLike, skip_bad: bool = False) -> dict:
    """Counts per split and class, the image size, and the problems found.

    Blank images are always counted; unreadable or wrong-size images and bad CSV rows
    stop with an error naming them unless ``skip_bad``, which counts and lists them.
    """
    splits = available_splits(source)
    if not splits:
        raise DataError(f"{source} holds no FER2013 split (expected train/ and test/ "
                        "folders, or a fer2013.csv)")
    info: dict = {"source": str(source), "image_size": [IMAGE_SIZE, IMAGE_SIZE],
                  "classes": list(CLASS_NAMES), "splits": {}}
    for name in splits:
        split = load_split(source, name, skip_bad=skip_bad)
        problems = [str(p) for p in split.problems]
        kinds: dict[str, int] = {}
        for p in split.problems:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
        info["splits"][name] = {"images": len(split), "per_class": split.class_counts(),
                                "problems": kinds, "problem_examples": problems[:_MAX_LISTED]}
    return info


def render_info(info: dict) -> str:
    """A plain-text table of :func:`describe`'s result."""
    names = list(info["splits"])
    width = max(len(c) for c in CLASS_NAMES) + 2
    lines = [f"FER2013 at {info['source']}: {info['image_size'][0]}x{info['image_size'][1]} gray",
             "class".ljust(width) + "".join(n.rjust(10) for n in names)]
    for cls in CLASS_NAMES:
        lines.append(cls.ljust(width) + "".join(
            f"{info['splits'][n]['per_class'][cls]:>10,}" for n in names))
    lines.append("total".ljust(width) + "".join(
        f"{info['splits'][n]['images']:>10,}" for n in names))
    for n in names:
        split = info["splits"][n]
        if split["problems"]:
            summary = ", ".join(f"{v} {k}" for k, v in split["problems"].items())
            lines.append(f"{n}: problems: {summary}")
            lines += [f"  {p}" for p in split["problem_examples"]]
        else:
            lines.append(f"{n}: no problems found")
    return "\n".join(lines)
