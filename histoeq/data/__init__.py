"""Patch datasets: the on-disk format, import, extraction from slides, label-efficiency fractions, augmentation."""
