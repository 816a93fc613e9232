"""Training teachers and self-distilled students: data, models, KD losses, checkpoints."""
