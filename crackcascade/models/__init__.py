"""LightningModules: the multi-task classifier (and weight loading)."""
