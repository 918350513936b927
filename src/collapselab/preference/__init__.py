"""Experiment 3 — self-preference bias: pairwise judging and its scores."""
