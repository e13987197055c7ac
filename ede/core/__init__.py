"""The method: networks, objective, training loop, estimator (torch, numpy, scikit-learn only)."""
