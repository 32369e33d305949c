"""Source edges: one module per backend, found through ``ckptflow.sources.registry``."""

__all__: list[str] = []
