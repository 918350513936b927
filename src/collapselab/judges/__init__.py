"""Judges: prompt templates, parsers, a refusal detector and the calibration set."""
