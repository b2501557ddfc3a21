"""The shipped model, which every command uses when given none.

It lives in the checkout's ``models/`` and is copied into the installed package
(``edgefer/models/``, see pyproject.toml), so a pip-installed edgefer has it too.
``$EDGEFER_MODEL`` names another model folder to use instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgefer.errors import ModelError

SHIPPED_NAME = "edgefer-mnv3s"
SHIPPED_INT8 = f"{SHIPPED_NAME}-int8.tflite"
_PACKAGE = Path(__file__).resolve().parent


def candidates() -> list[Path]:
    """Where the shipped model may be, in the order they are tried."""
    if os.environ.get("EDGEFER_MODEL"):
        return [Path(os.environ["EDGEFER_MODEL"])]
    return [Path("models") / SHIPPED_NAME, _PACKAGE.parent / "models" / SHIPPED_NAME,
            _PACKAGE / "models" / SHIPPED_NAME]


def shipped_model() -> Path:
    """The shipped model's folder (its Keras model, for export and as the reference)."""
    from edgefer.model.store import is_model_dir

    tried = candidates()
    for folder in tried:
        if is_model_dir(folder):
            return folder
    raise ModelError(f"the shipped model {SHIPPED_NAME} was not found (looked in "
                     f"{', '.join(str(c) for c in tried)}); give a model explicitly "
                     "(--model or MODEL), or set EDGEFER_MODEL to its folder")


def shipped_int8() -> Path:
    """The shipped INT8 TFLite model (for predict: runs without TensorFlow), else the folder."""
    folder = shipped_model()
    int8 = folder / SHIPPED_INT8
    return int8 if int8.is_file() else folder
