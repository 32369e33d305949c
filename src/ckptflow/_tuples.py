"""Typed converters for attrs fields (mypy's attrs plugin needs element-typed converters, not ``tuple``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["ints", "mappings", "str_set", "strs"]


def strs(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(items)


def ints(items: Iterable[int]) -> tuple[int, ...]:
    return tuple(items)


def str_set(items: Iterable[str]) -> frozenset[str]:
    return frozenset(items)


def mappings(items: Iterable[Mapping[str, Any]]) -> tuple[Mapping[str, Any], ...]:
    return tuple(items)
