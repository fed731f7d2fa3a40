"""Paper-literal, readable twins of every fast op: the test oracles and the benchmark baselines.

Nothing here is optimised; each function follows the papers' equations one to one.
"""
