"""Replay a training step as a CUDA graph.

A batch-1024 step of these models is launch-bound on a GPU: a hundred-odd tiny kernels, each
queued by Python, with the GPU idle between them. Capturing the whole step once and replaying
it removes the per-kernel launch cost. The step must be free of host syncs (no ``.item()``, no
data-dependent shapes) and its optimizer ``capturable``; the trainer only enables this for
steps that are.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

StepFn = Callable[..., tuple[Tensor, ...]]
_Captured = tuple[torch.cuda.CUDAGraph, list[Tensor], tuple[Tensor, ...]]


class GraphedStep:
    """Runs ``fn(*inputs)`` eagerly for the first ``warmup`` calls of each input shape, then
    captures it and replays the graph for every later call of that shape.

    Warm-up calls are real steps (run on a side stream, as CUDA-graph capture requires); the
    capturing call is followed by a replay, so every call performs exactly one step. Outputs
    of a replay live in static buffers that the next replay overwrites: copy what you keep.
    """

    def __init__(self, fn: StepFn, warmup: int = 2) -> None:
        self.fn = fn
        self.warmup = warmup
        self._calls: dict[tuple, int] = {}
        self._graphs: dict[tuple, _Captured] = {}

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        key = tuple((tuple(x.shape), x.dtype) for x in inputs)
        if key in self._graphs:
            graph, static_inputs, static_outputs = self._graphs[key]
            for static, value in zip(static_inputs, inputs, strict=True):
                static.copy_(value)
            graph.replay()
            return static_outputs
        calls = self._calls.get(key, 0)
        self._calls[key] = calls + 1
        if calls < self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                outputs = self.fn(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            return outputs
        static_inputs = [x.clone() for x in inputs]
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_outputs = self.fn(*static_inputs)
        self._graphs[key] = (graph, static_inputs, static_outputs)
        graph.replay()
        return static_outputs
