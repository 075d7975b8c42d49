"""A run's settings, resolved in one place for the command line and the Python API alike:
defaults < the recipe (byol.train.recipe: only where neither a preset nor a config file names
the run's settings) < preset < config file < keys set by hand (flags, --set, keywords)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from byol import config as cfg
from byol.config import Config, RunSettings
from byol.data.source import ImageSource
from byol.data.sources import is_named, list_source
from byol.train.recipe import recipe_for

RECIPE = "the recipe"


@dataclass(frozen=True)
class Resolved:
    """A run's config, where each key's value came from (config.yaml records it), and the lines that say so."""

    config: Config
    sources: dict[str, str]
    notices: list[str]
    listing: ImageSource | None = None  # the training images as the recipe listed them: the run lists them no more


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
    listing = None if not config.data or is_named(config.data) else list_source(config.data, config.image_size)
    config, chosen, line = recipe_for(config, set(asked.values), device, listing)
    sources |= dict.fromkeys(chosen, RECIPE)
    return Resolved(config, sources, notices + ([line] if line else []), listing)
