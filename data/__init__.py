"""Dataset loaders and scripts (never the datasets themselves)."""
