"""Kelpie: an agent runtime built on virtual actors and an ordered transactional key-value store."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
