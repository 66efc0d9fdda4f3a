"""probes layer: sparse dictionaries (SAEs and transcoders): one ``Dictionary`` object with the
formats' own encode/decode (``dictionary``), read from SAELens, Gemma Scope and sparsify
files, local or on the hub (``formats``)."""

LATENT_VECTOR = "sae:"
"""How a steering vector names a latent's decoder direction: ``sae:PATH#LATENT``."""
