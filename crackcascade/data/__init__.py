"""Readers, datasets, transforms and data modules; the synthetic generator is :mod:`crackcascade.synthetic`."""
