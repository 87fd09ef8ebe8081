"""The sweep as a pytest-benchmark suite: one test per (device, dtype, problem, strategy).

Run it with ``jacbench run``; the pairs come from the run's journal (``bench.sweep.plugin``).
"""


def test_pair(pair, benchmark, jacbench):
    jacbench.run(pair, benchmark)
