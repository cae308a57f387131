"""Example artifacts shipped with Sentinel: the ``triage`` model pair and its traffic generator
(see ``scripts/make_example_pair.py`` for how the pair is built)."""
