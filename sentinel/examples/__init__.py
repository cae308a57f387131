"""Example model pairs and their traffic generators, one per model kind Sentinel watches:

* ``triage`` (tabular MLP; committed; ``traffic.py``; built by ``scripts/make_example_pair.py``);
* ``digits`` (CNN on NCHW images; committed; ``digits.py``; ``scripts/make_digits_example.py``);
* ``support`` (MiniLM text classifier on raw text; built into the cache by ``support_build.py``,
  ``scripts/make_text_example.py``, from the messages ``support.py`` generates).

``demos.py`` says what ``sentinel demo --example NAME`` runs for each."""
