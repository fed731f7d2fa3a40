"""fastfp's benchmark suite: each fast path timed against the code a user would write, same run.

A package so its files import each other directly (``from .common import measure``): pytest
collects it as ``bench`` in a checkout, the wheel ships it as ``fastfp.bench``; ``fastfp bench``
runs either. See bench/README.md.
"""
