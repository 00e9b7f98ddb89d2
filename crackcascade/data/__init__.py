"""Datasets, data modules, transforms and the synthetic data generator."""
