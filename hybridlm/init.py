"""Parameter initialization that does not depend on how the model is laid out.

Every initial value is a pure function of (seed, parameter name, element index): a counter-based random
stream, not a stateful generator. A rank that holds only a shard of a parameter (tensor, expert or
data parallelism) computes exactly the values the single-process model has at those indices, without
ever materializing the whole parameter, so a run starts from the same weights in every layout.

    rules = model.init_rules()             # {parameter name: Init}
    fill_(param, rules[name], seed, name)  # the whole parameter
    fill_(shard, rule, seed, name, index)  # `index`: the global flat indices of the shard's elements

The stream: the flat positions of a parameter are cut into tiles of 65,536; tile t is drawn (in float32)
by torch's own generator seeded with a hash of (seed, name, t). A shard draws only the tiles it touches
(all of them when it is a slice along an inner dimension, one at a time, never the whole tensor).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

TILE = 1 << 16  # elements per independently seeded piece of a parameter's stream


def draw_seed() -> int:
    """A 62-bit seed from torch's global generator (so `torch.manual_seed` still fixes a model's init)."""
    return int(torch.randint(0, 2**62, (), device="cpu"))


def _tile_seed(seed: int, name: str, tile: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}/{name}/{tile}".encode(), digest_size=8).digest(), "little") >> 1


def _stream(sample, seed: int, name: str, index: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
    """The values of the random stream (seed, name) at the flat positions `index` (None: all positions of a
    tensor of `shape`, in order). Tile t of TILE consecutive positions comes from its own generator, so a
    shard draws only the tiles it touches."""
    n = math.prod(shape)
    if index is None:
        tiles, pos = range(-(-n // TILE)), None
    else:
        tiles, where = torch.unique(index.flatten().cpu() // TILE, return_inverse=True)
        pos, tiles = where * TILE + index.flatten().cpu() % TILE, tiles.tolist()
    gen = torch.Generator(device="cpu")
    drawn = []
    for t in tiles:
        gen.manual_seed(_tile_seed(seed, name, t))
        drawn.append(sample(torch.empty(TILE), gen))
    values = torch.cat(drawn) if drawn else torch.empty(0)
    if pos is None:
        return values[:n].view(shape)
    return values[pos].view(index.shape)


@dataclass(frozen=True)
class Init:
    """A rule: values(seed, name, index, shape) -> a tensor shaped like `index` (the flat positions of
    the wanted elements in a parameter of `shape`), or the whole parameter when `index` is None."""

    def values(self, seed: int, name: str, index: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Normal(Init):
    std: float

    def values(self, seed, name, index, shape):
        return _stream(lambda t, g: t.normal_(0.0, self.std, generator=g), seed, name, index, shape)


@dataclass(frozen=True)
class Uniform(Init):
    bound: float  # U(-bound, bound)

    def values(self, seed, name, index, shape):
        return _stream(lambda t, g: t.uniform_(-self.bound, self.bound, generator=g), seed, name, index,
                       shape)


@dataclass(frozen=True)
class Constant(Init):
    value: float

    def values(self, seed, name, index, shape):
        return torch.full(shape if index is None else index.shape, float(self.value), dtype=torch.float64)


@dataclass(frozen=True)
class LogPosition(Init):
    """log(1 + position along `dim`): S4D-real's A = 1..N, stored as A_log."""

    dim: int

    def values(self, seed, name, index, shape):
        index = flat_index(shape) if index is None else index.cpu()
        stride = math.prod(shape[self.dim + 1:])
        return torch.log1p(((index // stride) % shape[self.dim]).double())


@dataclass(frozen=True)
class DtBias(Init):
    """mamba_ssm's dt bias: dt log-uniform in [dt_min, dt_max], floored, stored as softplus^-1(dt)."""

    dt_min: float
    dt_max: float
    floor: float

    def values(self, seed, name, index, shape):
        u = _stream(lambda t, g: t.uniform_(generator=g), seed, name, index, shape).double()
        dt = torch.exp(u * (math.log(self.dt_max) - math.log(self.dt_min)) + math.log(self.dt_min))
        dt = dt.clamp(min=self.floor)
        return dt + torch.log(-torch.expm1(-dt))


def flat_index(shape: tuple[int, ...], device=None) -> torch.Tensor:
    """The flat indices of a whole tensor of `shape`."""
    return torch.arange(math.prod(shape), dtype=torch.int64, device=device).view(shape)


@torch.no_grad()
def fill_(tensor: torch.Tensor, rule: Init, seed: int, name: str, index: torch.Tensor | None = None,
          shape: tuple[int, ...] | None = None) -> None:
    """Write the rule's values into `tensor` in place. `index` (shaped like `tensor`) holds the global flat
    indices of its elements in the parameter of logical `shape`; by default `tensor` is the whole parameter.
    Meta tensors are left alone (they get their values when materialized)."""
    if tensor.is_meta:
        return
    shape = tuple(shape if shape is not None else tensor.shape)
    tensor.copy_(rule.values(seed, name, index, shape).to(tensor.dtype))


def apply_rules(module: torch.nn.Module, rules: dict[str, Init], seed: int) -> None:
    """Initialize the named parameters of `module` (whole tensors) with their rules."""
    params = dict(module.named_parameters())
    for name, rule in rules.items():
        fill_(params[name], rule, seed, name)
