"""Training: optimizer (parameter groups), state, pure step, checkpoints, metrics and the loop."""
