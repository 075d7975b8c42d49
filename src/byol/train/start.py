"""Where a new run's weights come from: random init, or `--init` weights (continued pretraining).

Online and target start equal either way. From `--init`, the encoder loads strictly (a
mismatch is one line, never a partial load); a byol run's projector and predictor load where
the new learner's have the same keys and shapes, and are new otherwise.
"""

from __future__ import annotations

from dataclasses import replace

from byol.checkpoint import Checkpoint
from byol.config import Config
from byol.core.errors import ByolError
from byol.eval.checkpoints import load_weights
from byol.eval.pretrained import HEAD_PREFIXES, Pretrained, read_pretrained
from byol.methods import Method

INIT_DIGEST = "the sha256 of init's file"  # config.yaml's source of init_sha256 where the run recorded it


def starting_weights(config: Config, checkpoint: Checkpoint | None) -> tuple[Pretrained | None, Config]:
    """The weights a new run starts from (config.init) and its config with their file's digest.
    A resumed run starts from its checkpoint and keeps the digest it recorded."""
    if checkpoint is not None:
        return None, replace(config, init_sha256=checkpoint.config.get("init_sha256"))
    if not config.init:
        return None, config
    start = read_pretrained(config.init)
    if config.init_sha256 and config.init_sha256 != start.sha256:
        raise ByolError(f"init {config.init} has sha256 {start.sha256[:16]}..., not {config.init_sha256[:16]}... as "
                        "init_sha256 says: it is not the file the config was written for; pass that file, or set "
                        "init_sha256=null to start from this one")
    return start, replace(config, init_sha256=start.sha256)


def start_from(learner: Method, start: Pretrained) -> str:
    """Load `start` into the learner's online network and copy it to the target; returns the
    line that says what came from where."""
    try:
        load_weights(learner.encoder, start.weights, start.file)
    except ByolError as err:
        raise ByolError(f"--init: {err}{_architecture_hint(start)}") from None
    state = learner.state_dict()
    loaded = []
    for prefix in HEAD_PREFIXES:
        mine = {k: v for k, v in state.items() if k.startswith(prefix)}
        theirs = {k: v for k, v in start.heads.items() if k.startswith(prefix)}
        if mine and mine.keys() == theirs.keys() and all(v.shape == theirs[k].shape for k, v in mine.items()):
            learner.load_state_dict(theirs, strict=False)
            loaded.append(prefix.split(".")[-2])
    target = getattr(learner, "target", None)
    if target is not None:
        target.load_state_dict(learner.online.state_dict())
    new = [prefix.split(".")[-2] for prefix in HEAD_PREFIXES
           if prefix.split(".")[-2] not in loaded and any(k.startswith(prefix) for k in state)]
    line = (f"init: {_listed(['encoder', *loaded])} from {start.source} (sha256 {start.sha256[:12]}...)"
            + (f"; {_listed(new)} new" if new else ""))
    return "; ".join([line, *start.notes])


def _listed(names: list[str]) -> str:
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


def _architecture_hint(start: Pretrained) -> str:
    """How to ask for the network the weights were made for, where the source says it."""
    if start.card is None:
        return ""
    card = start.card
    if card["architecture"].startswith("timm:"):
        return f" (it is {card['architecture']}: pass --encoder {card['architecture']})"
    return (f" (it is {card['architecture']} x{card['width']:g}: pass --encoder {card['architecture']} "
            f"--width {card['width']:g} --set cifar_stem={str(card['cifar_stem']).lower()})")
