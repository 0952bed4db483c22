"""Backbones (GMF, NeuMF, MF, biased MF, LightGCN, the item prior) and the saved-model format.

Importing it flushes subnormal floats to zero on the CPU, before any torch thread pool exists
(why, with the measurement: README, section "Speed", the IG epoch and subnormals).
"""

import torch

torch.set_flush_denormal(True)
