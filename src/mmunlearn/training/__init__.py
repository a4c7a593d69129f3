"""Training: the Trainer subclass, objectives' data, collators."""
