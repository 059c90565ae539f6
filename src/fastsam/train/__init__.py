"""Training, fine-tuning and evaluation (class-agnostic instance segmentation)."""
