"""The node population of the DES's population mode: N slots, each re-occupied by a new node
when its node leaves (a renewal process), so files placed on them share holders."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from simulations.model import Lifetime

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Population:
    """N node slots; each slot is re-occupied by a new node when its node leaves."""

    nodes: int
    lifetime: Lifetime = "exponential"
    weibull_shape: float = 0.7
    warmup_months: float = 36.0


class NodeSlots:
    """Departure times of every node occupying each slot, from before 0 until the horizon."""

    def __init__(self, pop: Population, mu: float, horizon: float, rng: np.random.Generator):
        mean = 1.0 / mu
        cols: list[FloatArray] = []
        t = np.full(pop.nodes, -pop.warmup_months)
        while True:
            if pop.lifetime == "exponential":
                life = rng.exponential(mean, pop.nodes)
            else:
                scale = mean / math.gamma(1.0 + 1.0 / pop.weibull_shape)
                life = scale * rng.weibull(pop.weibull_shape, pop.nodes)
            t = t + life
            cols.append(t)
            if t.min() > horizon:
                break
        self.departures = np.stack(cols, axis=1)
        self.n = pop.nodes

    def next_departure(self, slots: IntArray, at: FloatArray) -> FloatArray:
        rows = self.departures[slots]
        idx = (rows <= at[..., None]).sum(axis=-1)
        return np.take_along_axis(rows, idx[..., None], axis=-1)[..., 0]

    def place(self, count: int, width: int, rng: np.random.Generator) -> IntArray:
        """`count` rows of `width` distinct random slots."""
        slots = rng.integers(0, self.n, size=(count, width))
        while True:
            s = np.sort(slots, axis=1)
            dup = (s[:, 1:] == s[:, :-1]).any(axis=1)
            if not dup.any():
                return slots
            slots[dup] = rng.integers(0, self.n, size=(int(dup.sum()), width))
