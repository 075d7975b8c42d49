"""A model for ONNX runtimes: a pretrained encoder or a fine-tuned classifier written with
torch's exporter, checked in onnxruntime against torch before it is kept, and run by
onnxruntime alone (`byol predict --model model.onnx`).

The file holds the byol card (architecture, input size, mean, std, class names) as its
metadata (`byol`), and `input_size`, `mean`, `std` and `classes` as metadata of their own for
other runtimes; its input `images` is a float batch (N, 3, S, S) normalised as they say, with
a dynamic batch axis, and its output `logits` (classifier) or `features` (encoder).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from byol.config import Field, check_record
from byol.core.errors import ByolError
from byol.core.files import refuse_foreign_file, replacing
from byol.core.files import marker_kind
from byol.eval.cards import CARD_FIELDS, CLASSIFIER_FIELDS, CLASSIFIER_FORMAT

TOLERANCE = 1e-4  # the largest difference from torch (fp32) that a written model may have
EXTRA = "ONNX needs onnx, onnxscript and onnxruntime: pip install 'byol[onnx]'"


def _runtime():
    try:
        import onnxruntime
    except ImportError:
        raise ByolError(EXTRA) from None
    return onnxruntime


def _card_of(path: Path) -> dict | None:
    """The byol card an .onnx file carries in its metadata; None when it is not byol's."""
    try:
        session = _runtime().InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return json.loads(session.get_modelmeta().custom_metadata_map["byol"])
    except ByolError:
        raise
    except Exception:  # not ONNX, not readable, or without byol's metadata
        return None


def _is_onnx_export(format: str):
    return lambda path: (_card_of(path) or {}).get("format") == format


def check_onnx_place(out: Path, format: str) -> None:
    """Before any work: the extra is installed, `out` lies outside every folder byol owns, and
    replaces only an ONNX export of the same kind."""
    _runtime()
    try:
        import onnx  # noqa: F401  (torch's exporter needs it, and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError:
        raise ByolError(EXTRA) from None
    kind = marker_kind(out.parent)
    if kind is not None:
        raise ByolError(f"--out {out} is inside a byol {kind} folder, whose files are the {kind}'s own: export to "
                        "a place outside it")
    what = "classifier" if format == CLASSIFIER_FORMAT else "encoder"
    refuse_foreign_file(out, _is_onnx_export(format), f"{what} ONNX export")


def _metadata(card: dict) -> dict[str, str]:
    extra = {key: json.dumps(card[key]) for key in ("input_size", "mean", "std", "classes") if key in card}
    return dict(extra, byol=json.dumps(card))


def write_onnx(model: nn.Module, card: dict, out: Path) -> dict:
    """`model` (eval mode, fp32) as the ONNX file `out`, kept only if onnxruntime's outputs on a
    random batch differ from torch's by at most TOLERANCE; returns that difference."""
    import onnx

    classifier = card["format"] == CLASSIFIER_FORMAT
    check_onnx_place(out, card["format"])
    model = model.float().eval().cpu()
    size = card["input_size"]
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with replacing(out) as temporary:
        with torch.no_grad():
            program = torch.onnx.export(model, (example,), dynamo=True, input_names=["images"],
                                        output_names=["logits" if classifier else "features"],
                                        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), verbose=False)
        proto = program.model_proto
        for key, value in _metadata(card).items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save_model(proto, str(temporary))
        difference = _difference(model, temporary, size)
        if not difference <= TOLERANCE:
            raise ByolError(f"the ONNX model differs from the torch model by {difference:.2e} (more than "
                            f"{TOLERANCE:g}): not written; report it with your torch and onnx versions")
    return dict(out=str(out), max_abs_difference=difference)


def _difference(model: nn.Module, path: Path, size: int) -> float:
    """The largest absolute difference between torch's and onnxruntime's outputs on a random batch of 5."""
    images = torch.randn(5, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(images).numpy()
    session = _runtime().InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images.numpy()})[0]
    return float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")


class OnnxModel:
    """An exported .onnx model in onnxruntime: call it on a normalised float batch, get a tensor."""

    def __init__(self, path: Path) -> None:
        card = _card_of(path)
        if card is None:
            raise ByolError(f"{path} is not an ONNX model byol wrote (no byol metadata): export one with "
                            "`byol export --out MODEL.onnx`")
        fields = CLASSIFIER_FIELDS if card.get("format") == CLASSIFIER_FORMAT else CARD_FIELDS
        self.card = check_record(card, dict(fields, format=Field((str,))), path,
                                 "export it again with `byol export`")
        self.session = _runtime().InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"images": images.float().cpu().numpy()})[0])

    def to(self, device: torch.device | str) -> "OnnxModel":
        """onnxruntime runs on the CPU here: the model stays where it is."""
        return self

