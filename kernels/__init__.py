"""Triton kernels of fastfp, one op per file; shipped inside the wheel as ``fastfp.kernels``.

Importing a kernel module imports triton, so only the dispatch code in ``fastfp.ops`` does it,
lazily.
"""
