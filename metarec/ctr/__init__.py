"""CTR prediction for new items: the item-ID-embedding warm-up protocol of Meta-Embedding (Pan et al. SIGIR'19)
and MWUF (Zhu et al. SIGIR'21) on a frozen DeepFM backbone. The backbone is ``metarec/nets/deepfm.py``, the
protocol ``warmup.py``; the learners are ``metarec/learners/metaemb.py`` and ``metarec/learners/mwuf.py``; the
command is ``metarec compare --protocol warmup`` (alias ``metarec warmup``, ``command.py``)."""
