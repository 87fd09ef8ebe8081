"""HOW Jacobians are computed and measured: strategies, the sweep, results, reports.

Importing ``bench`` imports no torch: loading results, comparing and reporting work on a
machine without it. The modules that need torch import it themselves.
"""
