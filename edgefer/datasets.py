"""Where FER2013 is found when the user does not say."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_path() -> Path | None:
    """``$EDGEFER_FER2013``, else ``../shared/fer2013`` or ``./fer2013`` if present."""
    env = os.environ.get("EDGEFER_FER2013")
    if env:
        return Path(env)
    for candidate in (Path("../shared/fer2013"), Path("fer2013"), Path("fer2013.csv")):
        if candidate.exists():
            return candidate
    return None
