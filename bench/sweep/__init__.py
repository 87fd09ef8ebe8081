"""Running a sweep: the plan of pairs (``plan``), the resumable runner and its child processes
(``runner``), the pytest-benchmark plugin and suite they run (``plugin``, ``suite``), what the
machine is (``machine``), and the same sweep under several torch versions (``matrix``)."""
