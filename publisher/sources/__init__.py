"""Tip sources: each reads the node's chain tip one way and returns a TipSample or raises SourceError."""

from __future__ import annotations

from bpfailover.publisher.chain import Chain
from bpfailover.publisher.sources.base import SourceError, TipSample, TipSource
from bpfailover.publisher.sources.cardano_cli import CardanoCliSource
from bpfailover.publisher.sources.command import CommandSource
from bpfailover.publisher.sources.prometheus import PrometheusSource
from bpfailover.publisher.sources.simulate import SimulatedChain
from bpfailover.settings import ConfigError, PublisherSettings

__all__ = ["SourceError", "TipSample", "TipSource", "make_source"]


def make_source(settings: PublisherSettings, chain: Chain, *, pool: str, node: str) -> TipSource:
    """The source named by ``publisher.source``; ConfigError if its settings are incomplete."""
    if settings.source == "cardano-cli":
        return CardanoCliSource(settings.cardano_cli, chain, settings.socket_path, settings.timeout)
    if settings.source == "prometheus":
        return PrometheusSource(settings.metrics_url, settings.timeout)
    if settings.source == "command":
        if not settings.command:
            raise ConfigError("publisher.source 'command' needs publisher.command")
        return CommandSource(settings.command, settings.timeout)
    if settings.source == "simulate":
        # Seeded by pool: every node of the pool follows the same synthetic chain.
        return SimulatedChain(chain, pool, stall_file=settings.stall_file)
    raise ConfigError(
        f"publisher.source {settings.source!r} is not one of cardano-cli, prometheus, command, simulate"
    )
