"""Training: float, magnitude pruning, and (pruning-preserving) QAT stages."""
