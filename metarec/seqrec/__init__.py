"""Cold-start sequential recommendation (MML, Pan et al. CIKM'22): protocol, sequence models, baselines."""
