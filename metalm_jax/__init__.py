"""metalm_jax: MetaLM ("Language Models are General-Purpose Interfaces") in JAX/Flax.

A causal Transformer decoder is the universal interface; bidirectional encoders dock to it through
connectors and their outputs replace token embeddings at "slot" positions of the decoder input.
See docs/ARCHITECTURE.md for the modules and the data flow.
"""

__version__ = "0.1.0"
