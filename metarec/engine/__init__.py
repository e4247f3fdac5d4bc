"""The shared meta-learning engine: one functional, batched inner loop and one outer training loop."""
