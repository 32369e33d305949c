"""ckptflow's benchmark suite: ckptflow against the usual baselines, side by side, on loopback servers.

Run ``python -m bench`` (or ``python -m bench --quick`` for a smoke run); see docs/performance.md.
"""
