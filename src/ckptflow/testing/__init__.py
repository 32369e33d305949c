"""Hypothesis strategies and law checks for users' own stages and transforms."""

__all__: list[str] = []
