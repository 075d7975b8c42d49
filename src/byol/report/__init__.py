"""Run reports: curves, collapse statistics and an embedding of a run's features, as PNG + HTML/Markdown."""
