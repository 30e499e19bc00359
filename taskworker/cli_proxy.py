"""`tw-mesh` subcommands for proxy (filled in as the capability lands)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this capability's subcommands."""


def add_join_flags(parser: argparse.ArgumentParser) -> None:
    """Add this capability's options to `tw-mesh join`."""


def collect_join_settings(args: argparse.Namespace, settings: dict[str, object]) -> None:
    """Copy this capability's join options into the node settings."""
