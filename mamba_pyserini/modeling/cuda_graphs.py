"""CUDA graphs for packed layer stacks: a packed batch has one of a few shapes (``packing.layout``), so its
forward (and backward) kernels are captured once per shape and replayed as one launch, instead of hundreds of small
launches from Python per step.

One graph per (shapes, grad and inference mode, autocast state, trainable parameters), captured on first sight with
``torch.cuda.make_graphed_callables``. A model's training graphs share one memory pool and its inference graphs
another; a replay overwrites the previous replay's saved activations, so while a graphed training forward awaits
its backward, further forwards of that model run eagerly (correct, just slower). A capture that fails is logged
once and the model runs eagerly from then on."""
from __future__ import annotations

import logging
import weakref

import torch
from torch import nn

log = logging.getLogger("mamba_pyserini")
_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its _Graphs


class _Stack(nn.Module):
    """``fn(*args)`` as a module whose parameters are those of ``parts`` (make_graphed_callables captures the
    gradients of a module's parameters, not of a function's closure)."""

    def __init__(self, fn, parts: list[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


class _Graphs:
    def __init__(self):
        self.graphs: dict = {}
        self.pools: dict[bool, object] = {}
        self.pending = False  # a graphed training forward awaits its backward
        self.failed = False

    def __call__(self, fn, parts: list[nn.Module], args: tuple[torch.Tensor, ...]) -> torch.Tensor:
        trainable = tuple(p.requires_grad for part in parts for p in part.parameters())
        grad = torch.is_grad_enabled() and (any(trainable) or any(a.requires_grad for a in args))
        if self.failed or (grad and self.pending):
            return fn(*args)
        autocast = (torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"))
        key = (tuple((a.shape, a.dtype, a.requires_grad) for a in args), grad, torch.is_inference_mode_enabled(),
               autocast, trainable)
        graph = self.graphs.get(key)
        if graph is None:
            try:
                graph = self.graphs[key] = self._capture(fn, parts, args, grad, autocast)
            except (RuntimeError, AssertionError) as e:  # an operation that cannot be captured: run eagerly from now on
                log.warning("CUDA graph capture failed, running eagerly: %s", str(e).splitlines()[0])
                self.failed = True
                torch.cuda.synchronize()
                return fn(*args)
        out = graph(*args)
        if grad:
            self.pending = True
            out.register_hook(self._backward_done)
        return out

    def _backward_done(self, grad):
        self.pending = False

    def _capture(self, fn, parts, args, grad: bool, autocast):
        if grad not in self.pools:
            self.pools[grad] = torch.cuda.graph_pool_handle()
        sample = tuple(a.detach().clone().requires_grad_(a.requires_grad) for a in args)
        enabled, dtype = autocast
        with torch.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=False):
            return torch.cuda.make_graphed_callables(_Stack(fn, parts), sample, num_warmup_iters=2,
                                                     allow_unused_input=True, pool=self.pools[grad])


def graphed(owner: nn.Module, fn, parts: list[nn.Module], args: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``fn(*args)`` through ``owner``'s CUDA graph for these arguments' shapes (captured now if new). ``parts``:
    the modules whose parameters ``fn`` uses; ``args``: CUDA tensors of fixed shape per graph."""
    if owner not in _GRAPHS:
        _GRAPHS[owner] = _Graphs()
    return _GRAPHS[owner](fn, parts, args)
