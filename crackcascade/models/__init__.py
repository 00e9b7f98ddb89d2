"""LightningModules: their base classes, the classifier, the U-Net, the cascade, and their losses."""
