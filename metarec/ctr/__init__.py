"""CTR prediction for new items: a frozen DeepFM backbone and the item-ID-embedding warm-up protocol of
Meta-Embedding (Pan et al. SIGIR'19) and MWUF (Zhu et al. SIGIR'21). See ``backbone.py`` and ``warmup.py``;
the learners are ``metarec/learners/metaemb.py`` and ``metarec/learners/mwuf.py``; the command is
``metarec warmup`` (``command.py``)."""
