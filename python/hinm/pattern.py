"""Sparsity patterns: plain N:M (`NMConfig`) and hierarchical N:M (`HiNMConfig`).

Both are frozen dataclasses, validated on construction, and parse from strings:
``"2:4"`` and ``"hinm:v64:0.5:2:4"`` (v, vector density, n, m)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class NMConfig:
    """n kept out of every m consecutive elements along the input (K) axis."""

    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or not isinstance(self.m, int):
            raise TypeError(f"NMConfig: n and m must be integers, got {self.n!r}:{self.m!r}")
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
        NMConfig(self.n, self.m)  # validates n, m
        if not isinstance(self.v, int) or self.v < 1:
            raise ValueError(f"HiNMConfig: v must be a positive integer, got {self.v!r}")
        if not (0.0 < float(self.vec_density) <= 1.0):
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
        """Kt: columns each tile keeps for an input width k (a multiple of m, at least m)."""
        kt = int(round(k * float(self.vec_density) / self.m)) * self.m
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
