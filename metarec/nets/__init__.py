"""Networks and containers that several methods share: the feature context and encoder, the MLP, DeepFM, MF,
SASRec, GRU4Rec and MML's networks. They sit below the methods in the dependency order (cli -> runners ->
methods -> nets / engine -> protocols -> data; pyproject.toml [tool.importlinter]) and import no method."""
