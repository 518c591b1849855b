"""Training: optimizer (parameter groups), state, pure step, compiled trainer, checkpoints (the
one door), metrics and where a run's starting state comes from. The loop that runs it all is
`metalm_jax/loop.py`; the command is `python -m metalm_jax.train`."""
