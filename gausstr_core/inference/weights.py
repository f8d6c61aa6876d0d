"""Matrix-product weights held in the autocast dtype, cast once instead of at every frame.

Why: under ``torch.autocast`` every ``Linear`` and convolution casts its float32 weight and bias to
bf16 on every call (the autocast weight cache lives only as long as one autocast region, and a
CUDA graph capture cannot use it at all). For the talk2dino model that is a few hundred small cast
kernels per frame. Casting them once gives bit-identical results: autocast rounds the same float32
values to the same bf16 values, and an input that already has the autocast dtype is not cast again.

What is cast: the ``weight`` and ``bias`` of every ``nn.Linear`` and ``nn.Conv*`` /
``nn.ConvTranspose*`` module, except those inside ``nn.MultiheadAttention`` (its fast path reads its
parameters' dtypes together). Everything else (LayerNorm, embeddings, the query table, positional
embeddings) keeps float32, because autocast runs those ops in float32 anyway.

The float32 values are kept on the host and put back by ``restore()``: the predictor switches this
off and on at run time (``OccupancyPredictor.configure(cast_weights_once=...)``). Only for models
that nothing else trains: the trainer's evaluation turns it off (its parameters are the optimizer's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

CAST_MODULES = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def cast_targets(model: nn.Module) -> list[nn.Module]:
    """The modules whose weight and bias autocast casts at every call (see the module docstring)."""
    inside_attention: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            inside_attention.update(id(m) for m in module.modules())
    return [m for m in model.modules() if isinstance(m, CAST_MODULES) and id(m) not in inside_attention]


@dataclass
class _Saved:
    module: nn.Module
    name: str
    value: Tensor  # the float32 original, on the host
    requires_grad: bool


@dataclass
class LowPrecisionWeights:
    """``LowPrecisionWeights(model, dtype).apply()`` casts the weights in place;
    ``restore()`` puts the float32 originals back (same tensors' values, on the model's device).

    ``cast_parameters``: how many tensors were cast (0 before ``apply`` and after ``restore``).
    """

    model: nn.Module
    dtype: torch.dtype
    _saved: list[_Saved] = field(default_factory=list)

    @property
    def applied(self) -> bool:
        return bool(self._saved)

    @property
    def cast_parameters(self) -> int:
        return len(self._saved)

    @torch.no_grad()
    def apply(self) -> None:
        if self._saved:
            return
        for module in cast_targets(self.model):
            for name in ("weight", "bias"):
                param = module._parameters.get(name)
                if param is None or not param.is_floating_point() or param.dtype == self.dtype:
                    continue
                self._saved.append(_Saved(module, name, param.detach().cpu(), param.requires_grad))
                module._parameters[name] = nn.Parameter(param.detach().to(self.dtype), requires_grad=False)

    @torch.no_grad()
    def restore(self) -> None:
        for saved in reversed(self._saved):
            device = saved.module._parameters[saved.name].device
            saved.module._parameters[saved.name] = nn.Parameter(
                saved.value.to(device), requires_grad=saved.requires_grad
            )
        self._saved.clear()
