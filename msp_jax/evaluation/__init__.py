"""Does the synthetic data help: the training sets compared (seed only, EDA, synthetic), the downstream task
models trained on them, and the metrics they are scored with."""
