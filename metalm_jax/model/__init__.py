"""Model: masks, layers, Transformer stacks, text encoder, connector, interface decoder, MetaLM."""
