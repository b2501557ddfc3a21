"""The QAT-ready MobileNetV3 expression classifier."""
