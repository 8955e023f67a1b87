"""CNN trial harness: config, data, model, training, and the NNI adapter (python -m trial)."""
