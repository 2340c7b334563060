"""A bidirectional-LSTM CTC speech recognition toolkit.

Data flows one way: manifest -> audio -> features -> model -> decoder -> text.
Each stage lives in one module (see docs/ARCHITECTURE.md).
"""

__version__ = "0.1.0"
