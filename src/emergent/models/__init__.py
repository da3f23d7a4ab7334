"""Models: backbone loading/building, tokenizers, LightningModules, freezing and optimizers."""
