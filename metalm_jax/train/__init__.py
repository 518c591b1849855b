"""The `python -m metalm_jax.train` command (`__main__.py`); the library it runs is
`metalm_jax.training` and `metalm_jax.loop`."""
