"""Experiment 2 — safety: harmful prompt sets, jailbreak templates, safety metrics."""
