"""Measuring one (device, dtype, problem, strategy) pair: the gate, then memory, work and time
(``pair``), with the timing rounds (``timing``), the peak memory (``memory``) and the work
counting probe (``counting``)."""
