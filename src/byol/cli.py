"""The `byol` command: pretrain, compare, eval (knn, linear), finetune, predict, inspect, report, export,
embed, presets.

Problems the user can fix (ByolError) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import typing
from pathlib import Path

from byol import __version__
from byol import config as cfg
from byol.core.errors import ByolError
from byol.core.files import check_writable, refuse_foreign_file, write_json
from byol.data.names import DATASET_NAMES_HELP

DEVICES = "auto (the GPU if there is one), cpu, cuda or cuda:N"
FLAGS = {  # flag -> (config key, type, help); each help ends with the default (a preset may set its own)
    "--method": ("method", str, "byol, simclr, byol+simclr, or an ablation: byol-no-predictor, byol-tau0, "
                 "byol-tau1, byol-no-stopgrad, simsiam"),
    "--epochs": ("epochs", float, "training epochs, fractional ones too"),
    "--minutes": ("minutes", float, "wall-clock training budget in minutes, 0 for none; the schedules fit into it, "
                  "and with --epochs the run ends at whichever comes first"),
    "--batch-size": ("batch_size", int, "images per step over all processes (with --set accumulate=N, per "
                     "micro-batch: a step is N of them)"),
    "--init": ("init", str, "start from these weights (continued pretraining): a byol run or checkpoint, a byol "
               "export, a weights file (.safetensors, .pt, .pth), torchvision:NAME.WEIGHTS or timm:NAME; "
               "none: random init"),
    "--encoder": ("encoder", str, "resnet18, resnet34, resnet50, or timm:MODEL for any timm model"),
    "--width": ("width", float, "channel width multiplier of the encoder"),
    "--optimizer": ("optimizer", str, "lars, sgd or adamw"),
    "--lr": ("lr", float, "base learning rate, scaled by batch/256"),
    "--tau-base": ("tau_base", float, "initial target decay rate"),
    "--seed": ("seed", int, "random seed"),
    "--device": ("device", str, DEVICES),
    "--threads": ("threads", int, "CPU threads for torch; 0: on a CPU, the count that is fastest now, timed on the "
                  "run's own steps and again when the pace falls (cores shared with other programs)"),
    "--precision": ("precision", str, "auto (bf16 where the hardware has it), fp32, bf16 or fp16"),
}
DEVICE_HELP = f"{DEVICES} (default: auto)"
ENCODER_HELP = ("the pretrained encoder: a run folder or checkpoint.pt, an exported encoder, a weights file (.safetensors, "
                ".pt, .pth), torchvision:NAME.WEIGHTS or timm:NAME")


def _add_config_args(p: argparse.ArgumentParser, leave_out: tuple[str, ...] = ()) -> None:
    """The arguments that resolve a Config: data, preset, config file, flags and --set."""
    p.add_argument("--data", help="folder of images (class sub-folders optional), a file list FILE.txt (a path a line, "
                   "TAB and class optional), WebDataset shards ('shards/train-{000000..000127}.tar', a folder byol "
                   f"shard wrote, 'pipe:COMMAND'), or {DATASET_NAMES_HELP}")
    p.add_argument("--test", help="labelled test folder (or dataset name, e.g. cifar10:test) for k-NN during and "
                   "after training")
    p.add_argument("--config", help="YAML file of config keys (a run's config.yaml reproduces it)")
    p.add_argument("--preset", help=f"named preset: {', '.join(cfg.preset_names())} (byol presets show NAME)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key (byol presets show NAME lists them)")
    defaults = cfg.Config()
    for flag, (key, kind, text) in FLAGS.items():
        if flag not in leave_out:
            default = getattr(defaults, key)
            p.add_argument(flag, type=kind, help=f"{text} (default: {'none' if default is None else default})")


def _settings_from(args: argparse.Namespace) -> cfg.RunSettings:
    """What the arguments ask for: a preset, a config file, and the keys that flags and --set name."""
    values = {key: getattr(args, flag[2:].replace("-", "_"), None) for flag, (key, _, _) in FLAGS.items()}
    values = {k: v for k, v in values.items() if v is not None}
    values.update({k: v for k, v in (("data", args.data), ("test", args.test)) if v is not None})
    values.update(cfg.parse_override(text) for text in args.set)
    return cfg.RunSettings(args.preset, args.config, values)


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="pretrain an encoder on a folder of images (BYOL; --method for others)")
    p.add_argument("--out", type=Path, help="run folder to create, or to continue if it holds an unfinished run")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR with its saved config (runtime keys such as --threads may change)")
    p.add_argument("--no-resume", action="store_true", help="refuse an --out folder that already holds a run")
    p.add_argument("--data-changed", choices=["refuse", "ok"], default="refuse",
                   help="a resume whose --data files were added, removed or renamed since the run started: refuse "
                   "(default), or ok to continue on them (the summary records it)")
    _add_config_args(p)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="train several methods under one budget and compare them")
    p.add_argument("--out", required=True, type=Path, help="folder for the runs, compare.md and the report")
    p.add_argument("--methods", required=True, help="comma-separated, e.g. byol,simclr,byol-no-predictor")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    p.add_argument("--linear", action="store_true", help="also score each run with the linear probe")
    p.add_argument("--sweep", metavar="KEY=V1,V2,...", help="repeat the comparison at each value of one config key "
                   "(e.g. batch_size=32,64,128), every run seeing the same images: with --epochs, not --minutes")
    _add_config_args(p, leave_out=("--method", "--seed"))


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a pretrained encoder on labelled folders")
    protocols = p.add_subparsers(dest="protocol", required=True)
    for name, text in (("knn", "weighted k-NN on frozen features"),
                       ("linear", "logistic regression on frozen features, L2 penalty chosen on a validation split")):
        q = protocols.add_parser(name, help=text)
        q.add_argument("--checkpoint", required=True, help=ENCODER_HELP)
        q.add_argument("--train", required=True, help="labelled folder or dataset name (cifar10, stl10:train, ...): "
                       "the k-NN bank or the classifier's data; unlabelled images are left out")
        q.add_argument("--test", required=True, help="labelled folder or dataset name (cifar10:test, stl10:test, ...) "
                       "with the same classes (any dataset: transfer)")
        q.add_argument("--baseline", action="store_true", help="also score the same encoder at random init")
        q.add_argument("--out", type=Path, help=f"JSON file to write (default: eval_{name}.json beside the checkpoint)")
        q.add_argument("--device", default="auto", help=DEVICE_HELP)
        if name == "knn":
            q.add_argument("--k", type=int, help="neighbours (default: the run's knn_k, 200)")
            q.add_argument("--temperature", type=float, help="vote temperature (default: the run's, 0.1)")


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a pretrained encoder and a new head on a few labels (a classifier)")
    p.add_argument("--checkpoint", required=True, help=ENCODER_HELP)
    p.add_argument("--train", required=True, help="labelled folder (one sub-folder of images per class), file list "
                   "with a class column, or labelled shards")
    p.add_argument("--test", required=True, help="labelled images with the same classes, scored once at the end")
    p.add_argument("--out", required=True, type=Path, help="classifier folder to write (model, card, labels.txt, "
                   "finetune.json)")
    p.add_argument("--labels", help="the labels to use: a share of each class (1%%, 10%%), images a class (50), or a "
                   "list file of image paths (e.g. an earlier labels.txt); default: all")
    p.add_argument("--baseline", action="store_true", help="also fine-tune the same architecture from random init")
    p.add_argument("--epochs", type=int, help="length of the cosine schedule; the run stops after the epoch chosen on "
                   "validation (default: 30)")
    p.add_argument("--seed", type=int, default=0, help="chooses the labelled subset and seeds training (default: 0)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any fine-tuning setting: epochs, batch_size, lr (default: chosen on validation), "
                   "head_lr_mult, momentum, weight_decay, crop_min_scale, val_fraction, precision, workers")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="label every image of a folder with a fine-tuned classifier, as a CSV table")
    p.add_argument("--model", required=True, type=Path, help="the --out folder of byol finetune, or its ONNX export "
                   "(MODEL.onnx, run by onnxruntime)")
    p.add_argument("--data", required=True, help=SOURCE_HELP)
    p.add_argument("--out", required=True, type=Path, help="FILE.csv: file, label, score (and top5 with 5 or more "
                   "classes)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (default: 2)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="collapse statistics of a checkpoint on a folder of images")
    p.add_argument("--checkpoint", required=True, type=Path, help="run folder or checkpoint.pt")
    p.add_argument("--data", required=True, help=SOURCE_HELP + " (labels not needed)")
    p.add_argument("--images", type=int, default=512, help="images to probe (default: 512)")
    p.add_argument("--random-init", action="store_true", help="the learner the run started from, untrained")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="plots and an HTML/Markdown page for one run, or several overlaid")
    p.add_argument("runs", nargs="+", type=Path, help="run folders")
    p.add_argument("--out", type=Path, help="folder to write (default: RUN/report for a single run)")
    p.add_argument("--no-embedding", action="store_true", help="skip the t-SNE/UMAP of test features")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="the online encoder (or a fine-tuned classifier) as safetensors or a state_dict "
                       "with a JSON card, or as an ONNX model")
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="run folder, checkpoint.pt, or a byol finetune folder")
    p.add_argument("--out", required=True, type=Path, help="FILE.safetensors or FILE.pt (the card: FILE.json), or "
                   "FILE.onnx (card in its metadata; needs pip install 'byol[onnx]'), or FILE.pkl (a detectron2 "
                   "backbone)")


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="one embedding per image of a folder, as .npy rows or a Parquet table")
    p.add_argument("--checkpoint", required=True, help=ENCODER_HELP)
    p.add_argument("--data", required=True, help=SOURCE_HELP)
    p.add_argument("--out", required=True, type=Path, help="FILE.npy (file list: FILE.npy.files.txt) or FILE.parquet (columns file, embedding; needs pyarrow)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (default: 2)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


SOURCE_HELP = ("folder of images (any size, any layout), a file list FILE.txt, or WebDataset shards "
               "('shards/train-{000000..000127}.tar', a folder byol shard wrote, or 'pipe:COMMAND')")
BYTE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9}


def byte_size(text: str) -> int:
    """A size such as 512MB, 1.5GB or 100000 (bytes; units of 1000)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?b?)\s*", text.lower())
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write e.g. 512MB, 1GB or 100000 (bytes)")
    return int(float(found[1]) * BYTE_UNITS[found[2] if found[2] in BYTE_UNITS else found[2] + "b"])


def _add_shard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shard", help="write a folder of images (or a file list) as WebDataset shards")
    p.add_argument("--data", required=True, help="folder of images (class sub-folders for labels) or FILE.txt list")
    p.add_argument("--out", required=True, type=Path, help="folder for the shards, shards.json and skipped_files.txt")
    p.add_argument("--shard-size", type=byte_size, default="512MB", help="bytes a shard, about (default: 512MB)")
    p.add_argument("--workers", type=int, default=2, help="processes that check each image decodes (default: 2)")
    p.add_argument("--seed", type=int, default=0, help="the shuffle of the images across shards (default: 0)")


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line, like byol's own, with exit code 2, and that takes
    each flag in one spelling only (no abbreviations: --seed is not --seeds)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="byol", description="BYOL self-supervised pretraining and evaluation")
    parser.add_argument("--version", action="version", version=f"byol {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_pretrain(sub)
    _add_compare(sub)
    _add_eval(sub)
    _add_finetune(sub)
    _add_predict(sub)
    _add_inspect(sub)
    _add_report(sub)
    _add_export(sub)
    _add_embed(sub)
    _add_shard(sub)
    p = sub.add_parser("presets", help="list the shipped presets; `presets show NAME` prints every key of one")
    p.add_argument("show", nargs="?", choices=["show"], help="print a preset's every config key and value")
    p.add_argument("name", nargs="?", help="the preset to show")
    return parser


def run_pretrain(args: argparse.Namespace) -> int:
    from byol.train.trainer import pretrain

    if args.resume:
        if args.init:
            raise ByolError("--init starts a new run from weights and --resume continues a run from its checkpoint "
                            "(with the weights it started from): use one of them")
        if args.out or args.no_resume or args.config or args.preset:
            raise ByolError("--resume RUN_DIR takes the run's own config and folder: drop --out, --config, "
                            "--preset and --no-resume")
        saved = args.resume / "config.yaml"
        if not saved.is_file():
            raise ByolError(f"{args.resume} is not a run folder (no config.yaml): pass the --out of a byol pretrain run")
        args.config, args.out = str(saved), args.resume
    elif args.out is None:
        raise ByolError("say where the run goes: --out DIR (or continue one with --resume RUN_DIR)")
    result = pretrain(_settings_from(args), args.out, resume=not args.no_resume,
                      data_changed_ok=args.data_changed == "ok")
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one process reports
        print(json.dumps(result))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from byol.compare import compare
    from byol.train.recipe import device_for
    from byol.train.settings import resolve_settings

    asked = _settings_from(args)
    device = device_for(asked.without_recipe())
    resolved = resolve_settings(asked, device)
    config, notices = resolved.config, resolved.notices
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise ByolError(f"--seeds {args.seeds!r}: give whole numbers separated by commas, e.g. 0,1,2") from None
    compare(config, [m.strip() for m in args.methods.split(",")], seeds, args.out, args.linear, device, notices,
            _sweep(args.sweep) if args.sweep else None)
    print((args.out / "compare.md").read_text(), end="")
    return 0


def _sweep(text: str) -> tuple[str, list]:
    """`--sweep KEY=V1,V2,...` as (key, values), each value read as YAML like --set's."""
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise ByolError(f"--sweep {text!r}: write it as KEY=V1,V2,..., e.g. --sweep batch_size=32,64,128")
    return key.strip(), [cfg.parse_override(f"{key}={value}")[1] for value in values.split(",")]


def _is_eval_result(path: Path) -> bool:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(result, dict) and result.get("protocol") in ("knn", "linear") and "checkpoint" in result


def run_eval(args: argparse.Namespace) -> int:
    from byol.core.runtime import pick_device
    from byol.eval.pretrained import TIMM, TORCHVISION
    from byol.eval.protocols import evaluate

    encoders = ("pretrained", "random_init") if args.baseline else ("pretrained",)
    if args.out is None and args.checkpoint.startswith((TORCHVISION, TIMM)):
        raise ByolError(f"--checkpoint {args.checkpoint} has no folder to write the result in: say where it goes "
                        "with --out FILE.json")
    if args.out is not None:  # before the evaluation, not after it
        refuse_foreign_file(args.out, _is_eval_result, "evaluation result")
        check_writable(args.out)
    result = evaluate(args.protocol, args.checkpoint, args.train, args.test, encoders=encoders,
                      device=pick_device(args.device), k=getattr(args, "k", None),
                      temperature=getattr(args, "temperature", None))
    print(json.dumps(result), flush=True)
    _print_scores(result, f"{args.protocol} top-1 on {args.test}: pretrained {result['pretrained']['top1']:.2f}%")
    write_json(args.out or Path(result["checkpoint"]).parent / f"eval_{args.protocol}.json", result)
    return 0


def _print_scores(result: dict, line: str) -> None:
    """The scores' line on stderr, with the random-init baseline and the gain where they were scored."""
    if "gain_top1" in result:
        line += f", random init {result['random_init']['top1']:.2f}% ({result['gain_top1']:+.2f} points)"
    print(line, file=sys.stderr)


def run_finetune(args: argparse.Namespace) -> int:
    from byol.classifier import finetune_folder
    from byol.core.runtime import pick_device
    from byol.eval.finetune import finetune_settings

    overrides = dict(cfg.parse_override(text) for text in args.set)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    settings = finetune_settings(overrides)
    result = finetune_folder(args.checkpoint, args.train, args.test, args.out, args.labels, settings,
                             pick_device(args.device), args.seed, args.baseline)
    print(json.dumps(result), flush=True)
    _print_scores(result, f"fine-tuned on {result['labels']} labelled images, top-1 on {args.test}: pretrained "
                  f"{result['pretrained']['top1']:.2f}%, linear probe {result['linear']['top1']:.2f}%")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from byol.classifier import predict_folder
    from byol.core.runtime import pick_device

    result = predict_folder(args.model, args.data, args.out, args.batch_size, args.workers, pick_device(args.device))
    print(json.dumps(result))
    if result["undecodable"]:
        print(f"{result['undecodable']} of {result['images']} files could not be decoded: their label in {args.out} "
              "is empty", file=sys.stderr)
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from byol.core.runtime import pick_device
    from byol.eval.collapse import CAUSES
    from byol.eval.inspect import inspect_checkpoint

    result = inspect_checkpoint(args.checkpoint, args.data, args.images, pick_device(args.device), args.random_init)
    print(json.dumps(result))
    verdict = f"COLLAPSED: {'; '.join(result['alarms'])}; {CAUSES}" if result["alarms"] else "no sign of collapse"
    print(verdict, file=sys.stderr)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from byol.core.runtime import pick_device
    from byol.report.page import write_report

    if args.out is None and len(args.runs) > 1:
        raise ByolError("several runs make one overlaid report: say where it goes with --out DIR")
    written = write_report(args.runs, args.out or args.runs[0] / "report", embedding=not args.no_embedding,
                           device=pick_device(args.device))
    for path in written:
        print(path)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from byol.classifier import export_model

    result = export_model(args.checkpoint, args.out)
    print(json.dumps(result))
    if "max_abs_difference" in result:
        print(f"{args.out}: onnxruntime's outputs within {result['max_abs_difference']:.1e} of torch's", file=sys.stderr)
    return 0


def run_embed(args: argparse.Namespace) -> int:
    from byol.core.runtime import pick_device
    from byol.export import embed_folder

    print(json.dumps(embed_folder(args.checkpoint, args.data, args.out, args.batch_size, args.workers,
                                  pick_device(args.device))))
    return 0


def run_shard(args: argparse.Namespace) -> int:
    from byol.data.shard_writer import write_shards

    print(json.dumps(write_shards(args.data, args.out, args.shard_size, args.workers, args.seed)))
    return 0


def run_presets(args: argparse.Namespace) -> int:
    if args.show:
        if not args.name:
            raise ByolError(f"say which preset to show: byol presets show NAME ({', '.join(cfg.preset_names())})")
        print(f"# preset {args.name}: every key, the preset's values over the defaults")
        print(cfg.yaml_text(cfg.resolve(args.name)), end="")
        return 0
    for name in cfg.preset_names():
        print(f"{name:<20} {cfg.preset_summary(name)}")
    return 0


COMMANDS = {"pretrain": run_pretrain, "compare": run_compare, "eval": run_eval, "finetune": run_finetune,
            "predict": run_predict, "inspect": run_inspect,
            "report": run_report, "export": run_export, "embed": run_embed, "shard": run_shard,
            "presets": run_presets}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ByolError as err:
        print(f"byol: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        # a DataLoader interrupted while it started its workers fails again in __del__ when it is
        # freed (pytorch/pytorch#64895); after Ctrl-C such cleanup errors are noise, not news
        sys.unraisablehook = lambda unraisable: None
        print("byol: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
