"""``python -m kelpie`` runs the ``kelpie`` command line."""

from __future__ import annotations

from kelpie.cli import main

main()
