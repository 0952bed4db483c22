"""The pure-PyTorch core: backbones, losses, metrics, the IG step, objectives and the trainer.

Importing it makes the CPU treat subnormal floats as zero, process-wide and before any thread
pool exists (the flag is per thread, and threads inherit it from the thread that creates them;
set later, e.g. when a trainer starts, it reaches the calling thread only). Why: Adam's first
moment of a table row that no batch touches decays by β1 = 0.9 per step and enters float32's
subnormal range after ~830 steps; CPUs compute subnormals in a slow path, so dense Adam's
per-step cost grew with an epoch's step count, that is with its rows (micro_video shape, fused
update 2.3 ms a step at 1 M rows, 6.4 ms at 6 M; 2.2 ms with the flag). Values below ~1e-38
become 0, which no metric can see.
"""

import torch

torch.set_flush_denormal(True)
