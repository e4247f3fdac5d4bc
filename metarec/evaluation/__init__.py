"""Evaluation: metrics and protocols for meta-learned recommenders."""
