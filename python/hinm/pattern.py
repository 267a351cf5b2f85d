"""Sparsity patterns: plain N:M (`NMConfig`) and hierarchical N:M (`HiNMConfig`).

Both are frozen dataclasses, validated on construction, and parse from strings:
``"2:4"`` and ``"hinm:v64:0.5:2:4"`` (v, vector density, n, m)."""

from __future__ import annotations

import numbers
import operator
from dataclasses import dataclass
from typing import Any, Union


def _int_field(owner: str, name: str, value: Any) -> int:
    """value as a plain int (numpy integers welcome); bools and non-integers are a TypeError."""
    if isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{owner}: {name} must be an integer, got {value!r}") from None


@dataclass(frozen=True)
class NMConfig:
    """n kept out of every m consecutive elements along the input (K) axis."""

    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", _int_field("NMConfig", "n", self.n))
        object.__setattr__(self, "m", _int_field("NMConfig", "m", self.m))
        if not 2 <= self.m <= 256:
            raise ValueError(f"NMConfig: m must be in [2, 256], got {self.m}")
        if not 1 <= self.n < self.m:
            raise ValueError(f"NMConfig: need 1 <= n < m, got {self.n}:{self.m}")

    @property
    def density(self) -> float:
        return self.n / self.m

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    @classmethod
    def parse(cls, text: str) -> "NMConfig":
        parts = text.strip().split(":")
        if len(parts) != 2:
            raise ValueError(f"cannot parse N:M pattern {text!r} (expected e.g. '2:4')")
        try:
            return cls(int(parts[0]), int(parts[1]))
        except ValueError as e:
            raise ValueError(f"cannot parse N:M pattern {text!r}: {e}") from None


@dataclass(frozen=True)
class HiNMConfig:
    """Hierarchical N:M: tiles of v output rows each keep round(K·vec_density/m)·m input columns
    (vector pruning), then n:m along each row over the kept columns."""

    v: int = 64
    vec_density: float = 0.5
    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        nm = NMConfig(self.n, self.m)  # validates n, m
        object.__setattr__(self, "n", nm.n)
        object.__setattr__(self, "m", nm.m)
        object.__setattr__(self, "v", _int_field("HiNMConfig", "v", self.v))
        if self.v < 1:
            raise ValueError(f"HiNMConfig: v must be a positive integer, got {self.v!r}")
        if isinstance(self.vec_density, bool) or not isinstance(self.vec_density, numbers.Real):
            raise TypeError(f"HiNMConfig: vec_density must be a real number, got {self.vec_density!r}")
        object.__setattr__(self, "vec_density", float(self.vec_density))
        if not (0.0 < self.vec_density <= 1.0):  # also rejects NaN
            raise ValueError(f"HiNMConfig: vec_density must be in (0, 1], got {self.vec_density!r}")

    @property
    def nm(self) -> NMConfig:
        return NMConfig(self.n, self.m)

    @property
    def density(self) -> float:
        return float(self.vec_density) * self.n / self.m

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    def kept_columns(self, k: int) -> int:
        """Kt: columns each tile keeps for an input width k: round(k·vec_density/m)·m (Python's
        round), at most k rounded down to a multiple of m, at least m (else ValueError)."""
        k = _int_field("HiNMConfig.kept_columns", "k", k)
        kt = int(round(k * self.vec_density / self.m)) * self.m
        kt = min(kt, k // self.m * self.m)
        if kt < self.m:
            raise ValueError(f"{self}: an input width of {k} keeps fewer than m={self.m} columns per tile")
        return kt

    def __str__(self) -> str:
        return f"hinm:v{self.v}:{self.vec_density:g}:{self.n}:{self.m}"

    @classmethod
    def parse(cls, text: str) -> "HiNMConfig":
        parts = text.strip().split(":")
        if len(parts) != 5 or parts[0].lower() != "hinm" or not parts[1].lower().startswith("v"):
            raise ValueError(f"cannot parse HiNM config {text!r} (expected e.g. 'hinm:v64:0.5:2:4')")
        try:
            return cls(int(parts[1][1:]), float(parts[2]), int(parts[3]), int(parts[4]))
        except ValueError as e:
            raise ValueError(f"cannot parse HiNM config {text!r}: {e}") from None


Config = Union[NMConfig, HiNMConfig]


def parse_config(config: Union[str, Config]) -> Config:
    """An NMConfig or HiNMConfig from a config object or a string ('2:4', 'hinm:v64:0.5:2:4')."""
    if isinstance(config, (NMConfig, HiNMConfig)):
        return config
    if isinstance(config, str):
        return HiNMConfig.parse(config) if config.strip().lower().startswith("hinm") else NMConfig.parse(config)
    raise TypeError(f"expected an NMConfig, HiNMConfig or pattern string, got {type(config).__name__}")
