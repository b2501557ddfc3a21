"""edgefer: facial-expression CNNs from training to phones and Raspberry Pis, measured."""

__version__ = "0.1.0"
