"""Performance measurement: interleaved timing of baseline and candidate, peak memory of each
runtime session, and the hardware/software fingerprint stored with every measurement.

Judging the numbers is the checks' job (``sentinel/checks/perf/``); this package only measures.
"""
