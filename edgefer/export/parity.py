"""The parity gate: an export must agree with the model it came from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Parity:
    images: int
    agreement: float  # top-1 agreement with the reference
    max_prob_diff: float  # largest absolute probability difference, any image, any class
    threshold: float
    synthetic: bool = False  # True when no FER2013 was found and random faces were used

    @property
    def passed(self) -> bool:
        return self.agreement >= self.threshold


def compare(reference: np.ndarray, candidate: np.ndarray, threshold: float,
            synthetic: bool = False) -> Parity:
    agree = float(np.mean(reference.argmax(1) == candidate.argmax(1)))
    return Parity(len(reference), agree, float(np.abs(reference - candidate).max()),
                  threshold, synthetic)
