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


# An INT8 output moves in steps of 1/256: a reference whose top two classes are closer
# than that is a tie, and either pick agrees with it.
TIE_MARGIN = 1.0 / 256


def compare(reference: np.ndarray, candidate: np.ndarray, threshold: float,
            synthetic: bool = False) -> Parity:
    picked = candidate.argmax(1)
    chosen = reference[np.arange(len(reference)), picked]
    agree = float(np.mean(chosen >= reference.max(1) - TIE_MARGIN))
    return Parity(len(reference), agree, float(np.abs(reference - candidate).max()),
                  threshold, synthetic)
