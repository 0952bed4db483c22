"""The training engine: config, batches, the one training loop (``Trainer.fit``), model
selection, diagnostics and the run folder it writes. Pure PyTorch: no Ray."""
