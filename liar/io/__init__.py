"""Reading models (including the embedded default and pruned checkpoints) and writing pruned ones."""
