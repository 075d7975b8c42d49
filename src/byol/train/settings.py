"""A run's settings, resolved in one place for the command line and the Python API alike:
defaults < the recipe (byol.train.recipe: only where neither a preset nor a config file names
the run's settings) < preset < config file < keys set by hand (flags, --set, keywords)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from byol import config as cfg
from byol.config import Config, RunSettings
from byol.train.recipe import recipe_for

RECIPE = "the recipe"


@dataclass(frozen=True)
class Resolved:
    """A run's config, where each key's value came from (config.yaml records it), and the lines that say so."""

    config: Config
    sources: dict[str, str]
    notices: list[str]


def resolve_settings(asked: RunSettings, device: torch.device) -> Resolved:
    """The config a run trains with on `device`. With no preset and no config file, the recipe
    for its images and device fills every key not set by hand (on a GPU that takes two trial
    steps: call this where the run starts)."""
    config, sources = cfg.resolve_with_sources(asked.preset, asked.config_file, asked.values)
    notices = []
    if "epochs" in asked.values and config.minutes is not None:
        notices.append(f"epochs {config.epochs:g} and a {config.minutes:g}-minute budget: the run ends at whichever "
                       "comes first (--minutes 0 lifts the time limit)")
    if asked.preset or asked.config_file:
        return Resolved(config, sources, notices)
    config, chosen, line = recipe_for(config, set(asked.values), device)
    sources |= dict.fromkeys(chosen, RECIPE)
    return Resolved(config, sources, notices + ([line] if line else []))
