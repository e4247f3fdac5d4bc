"""metarec: meta-learning for cold-start recommendation.

``metarec.run(learner, protocol, dataset, seed, ...)`` trains one registered method (``metarec learners``) and
returns the trained model with its results (:mod:`metarec.api`); importing metarec itself stays cheap.
"""

__version__ = "0.1.0"
__all__ = ["run"]


def run(*args, **kwargs):
    """See :func:`metarec.api.run`."""
    from metarec.api import run as _run

    return _run(*args, **kwargs)
