"""Transfer training: strategies, heads, the feature cache and the training loops."""
