"""The rating, scenario and warm-up learners: one ``Learner`` subclass per file; the one registry of methods is
:mod:`metarec.registry` (``registry.py`` here is its view for these families)."""
