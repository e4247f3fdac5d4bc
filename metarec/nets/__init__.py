"""Networks and containers that several methods share (the feature context, MLPs, DeepFM), below the methods
in the dependency order: cli -> runners -> methods -> nets / engine -> protocols -> data (.importlinter)."""
