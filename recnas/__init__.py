"""recnas: weight-sharing neural architecture search for CTR recommender models."""

__version__ = "0.1.0"
