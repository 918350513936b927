"""Experiment configuration: pydantic specs, YAML loading and dotted overrides."""
