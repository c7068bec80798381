"""lyrictool: train and serve LLMs that write controllable Chinese song lyrics."""

__version__ = "0.1.0"
