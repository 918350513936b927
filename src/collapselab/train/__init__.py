"""LoRA fine-tuning: one linear recipe."""
