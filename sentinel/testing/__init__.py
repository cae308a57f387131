"""Helpers to run Sentinel against real local peers (used by the tests and by ``sentinel demo``).

Nothing here imports pytest.
"""
