"""What pretraining measures as it goes: k-NN accuracy, and collapse statistics (byol.eval.collapse)
with their alarm."""

from __future__ import annotations

import torch

from byol.config import Config
from byol.core.errors import CollapseError
from byol.core.progress import note
from byol.core.runtime import autocast
from byol.data.source import ImageSource
from byol.data.sources import open_images
from byol.data.views import Views
from byol.eval.collapse import CAUSES, CollapseProbe, collapse_alarms
from byol.eval.features import features_and_labels, labelled_pair, run_transform
from byol.eval.knn import knn_accuracy
from byol.train.batches import TrainData


class KnnMonitor:
    """k-NN top-1/top-5 of the online encoder: training images as the bank, --test as queries.

    Small images are held decoded; larger ones stream from their files through loader
    workers at the training size. Only labelled images enter the bank and the queries, each
    a fixed sample of at most knn_bank and knn_queries of them."""

    def __init__(self, bank: ImageSource, queries: ImageSource, config: Config, device: torch.device) -> None:
        bank, queries = labelled_pair(bank, queries, config.data or "the training data",
                                      config.test or "the held-out split")
        self.bank, self.queries = at_most(bank, config.knn_bank, config.seed), at_most(queries, config.knn_queries,
                                                                                        config.seed)
        self.config, self.device = config, device
        self.transform = run_transform(config)

    def __call__(self, encoder: torch.nn.Module, dtype: torch.dtype | None) -> dict[str, float]:
        size, workers = self.config.image_size, self.config.workers
        with autocast(self.device, dtype):
            bank, bank_labels = features_and_labels(encoder, self.bank, self.transform, size, self.device,
                                                    desc="k-NN bank", workers=workers)
            queries, query_labels = features_and_labels(encoder, self.queries, self.transform, size, self.device,
                                                        desc="k-NN test", workers=workers)
        return knn_accuracy(bank, bank_labels, queries, query_labels, len(self.bank.classes),
                            self.config.knn_k, self.config.knn_temperature)


def knn_monitor(config: Config, data: TrainData, device: torch.device) -> KnnMonitor | None:
    """k-NN during training when there are labels: the training images as the bank and --test as
    the queries; without --test, a fixed tenth of the training images as queries (optimistic:
    pretraining saw them); with --test but unlabelled training images, a fixed tenth of --test
    as queries and the rest as the bank."""
    training = data.source
    test = open_images(config.test, config.image_size) if config.test else None
    if test is not None and _has_labels(training):
        return KnnMonitor(training, test, config, device)
    labelled = training if test is None else test
    if not _has_labels(labelled):
        return None
    if test is not None:
        note(f"k-NN during training: {config.data} has no labels, so 90% of {config.test} is the bank "
             "and a fixed 10% of it the queries")
    order = torch.randperm(len(labelled.labels), generator=torch.Generator().manual_seed(config.seed)).tolist()
    split = len(order) // 10
    return KnnMonitor(labelled.subset(order[split:]), labelled.subset(order[:split]), config, device)


def at_most(data: ImageSource, count: int, seed: int) -> ImageSource:
    """`data`, or a sample of `count` of its images drawn from `seed` (the same at every evaluation of a run)."""
    if not count or len(data.labels) <= count:
        return data
    chosen = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(seed))[:count]
    return data.subset(chosen.sort().values.tolist())


def _has_labels(data: ImageSource) -> bool:
    return len(data.classes) >= 2 and bool((data.labels >= 0).any())


class CollapseAlarm:
    """Warns when the collapse statistics cross their lines on `patience` probes in a row,
    and with `stop` ends the run (the last checkpoint stays as it was)."""

    def __init__(self, dim: int, stop: bool, patience: int = 2, report: bool = True) -> None:
        self.dim, self.stop, self.patience, self.report = dim, stop, patience, report
        self.strikes = 0

    def __call__(self, step: int, stats: dict[str, float]) -> None:
        alarms = collapse_alarms(stats, self.dim)
        self.strikes = self.strikes + 1 if alarms else 0
        if self.strikes < self.patience:
            return
        message = f"collapse at step {step}: {'; '.join(alarms)}; {CAUSES}"
        if self.stop:
            raise CollapseError(message)
        if self.strikes == self.patience and self.report:
            note(f"WARNING: {message} (collapse_stop=true ends such runs)")


def collapse_probe(config: Config, data: TrainData, views: Views, device: torch.device) -> CollapseProbe | None:
    if not config.collapse_every:
        return None
    return CollapseProbe.sample(data.source, config.image_size, views, device, config.seed + 1)
