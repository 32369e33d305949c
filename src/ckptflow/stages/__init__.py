"""Pure stages and transforms: formats, keys, match, strategies, freeze."""

__all__: list[str] = []
