"""What a run reads: the grain pipelines (text, image-text, task mixtures) built on the corpora,
the pretraining rows and the tasks, and the prepared-rows job (`python -m metalm_jax.prepare`)
with the manifest check of its output."""
