"""Layer streaming: prune checkpoints larger than memory, one block at a time, resumably."""
