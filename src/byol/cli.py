"""The `byol` command: pretrain, eval knn, presets.

Problems the user can fix (ByolError) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from byol import config as cfg
from byol.errors import ByolError

FLAGS = {  # flag -> (config key, type, help)
    "--epochs": ("epochs", int, "training epochs"),
    "--minutes": ("minutes", float, "wall-clock training budget; the schedules fit into it"),
    "--batch-size": ("batch_size", int, "images per micro-batch"),
    "--encoder": ("encoder", str, "resnet18, resnet34 or resnet50"),
    "--width": ("width", float, "channel width multiplier of the encoder"),
    "--optimizer": ("optimizer", str, "lars, sgd or adamw"),
    "--lr": ("lr", float, "base learning rate, scaled by batch/256"),
    "--tau-base": ("tau_base", float, "initial target decay rate"),
    "--seed": ("seed", int, "random seed"),
    "--device": ("device", str, "auto, cpu or cuda"),
    "--threads": ("threads", int, "CPU threads for torch"),
    "--precision": ("precision", str, "auto, fp32, bf16 or fp16"),
}


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="pretrain an encoder with BYOL on a folder of images")
    p.add_argument("--data", help="folder of images (ImageFolder or flat), or cifar10 / cifar100 / stl10")
    p.add_argument("--test", help="labelled test folder for k-NN during and after training")
    p.add_argument("--out", required=True, type=Path, help="run folder to create")
    p.add_argument("--config", help="YAML file of config keys (a run's config.yaml reproduces it)")
    p.add_argument("--preset", help=f"named preset: {', '.join(cfg.preset_names())}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")
    for flag, (_, kind, text) in FLAGS.items():
        p.add_argument(flag, type=kind, help=text)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a pretrained encoder")
    protocols = p.add_subparsers(dest="protocol", required=True)
    knn = protocols.add_parser("knn", help="weighted k-NN on frozen features")
    knn.add_argument("--checkpoint", required=True, type=Path, help="run folder or checkpoint.pt")
    knn.add_argument("--train", required=True, help="labelled folder: the k-NN memory bank")
    knn.add_argument("--test", required=True, help="labelled folder with the same classes")
    knn.add_argument("--random-init", action="store_true", help="evaluate the same architecture untrained")
    knn.add_argument("--k", type=int, help="neighbours (default: the run's knn_k, 200)")
    knn.add_argument("--temperature", type=float, help="vote temperature (default: the run's, 0.1)")
    knn.add_argument("--out", type=Path, help="JSON file to write (default: beside the checkpoint)")
    knn.add_argument("--device", default="auto")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="byol", description="BYOL self-supervised pretraining and evaluation")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_pretrain(sub)
    _add_eval(sub)
    sub.add_parser("presets", help="list the shipped presets")
    return parser


def run_pretrain(args: argparse.Namespace) -> int:
    from byol.train.loop import pretrain

    overrides = {key: getattr(args, flag[2:].replace("-", "_")) for flag, (key, _, _) in FLAGS.items()}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    overrides.update({k: v for k, v in (("data", args.data), ("test", args.test)) if v is not None})
    overrides.update(cfg.parse_override(text) for text in args.set)
    config = cfg.resolve(args.preset, args.config, overrides)
    result = pretrain(config, args.out)
    print(json.dumps(result))
    return 0


def run_eval_knn(args: argparse.Namespace) -> int:
    from byol.data.folders import load_images
    from byol.data.views import view_specs
    from byol.eval.checkpoints import load_run_encoder
    from byol.train.monitors import KnnMonitor
    from byol.train.runtime import autocast_dtype, pick_device

    device = pick_device(args.device)
    encoder, config, checkpoint = load_run_encoder(args.checkpoint, random_init=args.random_init)
    config.knn_k = args.k or config.knn_k
    config.knn_temperature = args.temperature or config.knn_temperature
    config.validate()
    monitor = KnnMonitor(load_images(args.train, config.image_size), load_images(args.test, config.image_size),
                         config, view_specs(config.augment, config.image_size)[0], device)
    result = monitor(encoder.to(device), autocast_dtype(config.precision, device))
    result.update(k=config.knn_k, temperature=config.knn_temperature, random_init=args.random_init,
                  checkpoint=str(checkpoint))
    out = args.out or checkpoint.parent / ("knn_random_init.json" if args.random_init else "knn_eval.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "pretrain":
            return run_pretrain(args)
        if args.command == "eval":
            return run_eval_knn(args)
        for name in cfg.preset_names():
            print(name)
        return 0
    except ByolError as err:
        print(f"byol: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
