"""Orchestration over several stages: the sweep (train then rotation-evaluate a grid of runs), the benchmarks of
layers, equivariance and training, and the table that opens any model file for evaluation.

It sits above train, evaluate, export and infer and below the command line; nothing under it imports it.
"""
