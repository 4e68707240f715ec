"""`resnet train`: flags (or a YAML config / recipe) -> TrainConfig -> `resnet.engine.train`."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import yaml

from .. import tasks
from ..data import BUILTIN
from ..data.scan_index import is_scan_source
from ..data.transforms import PRESETS
from ..engine import TrainConfig, train
from ..engine.launch import launch_local
from ..engine.recipes import list_recipes, load_recipe
from ..errors import ResNetError
from ..models import get_entry

# flag -> (section, key). Only flags given on the command line override the config.
FLAG_MAP = {
    "model": ("model", "name"),
    "whiten_stem": ("model", "whiten_stem"),
    "freeze_whitened": ("model", "freeze_whitened"),
    "data": ("data", "source"),
    "val_split": ("data", "val_split"),
    "subset": ("data", "subset"),
    "augment": ("data", "augment"),
    "flip": ("data", "flip"),
    "alternate_flip": ("data", "alternate_flip"),
    "batch_size": ("data", "batch_size"),
    "workers": ("data", "workers"),
    "in_memory": ("data", "in_memory"),
    "image_size": ("data", "image_size"),
    "bad_images": ("data", "bad_images"),
    "early_size": ("data", "early_size"),
    "early_epochs": ("data", "early_epochs"),
    "volume": ("data", "volume"),
    "slices": ("data", "slices"),
    "window": ("data", "window"),
    "spacing": ("data", "spacing"),
    "group_by": ("data", "group_by"),
    "folds": ("data", "folds"),
    "fold": ("data", "fold"),
    "balance": ("data", "balance"),
    "multilabel": ("data", "multilabel"),
    "optimizer": ("optim", "optimizer"),
    "lr": ("optim", "lr"),
    "momentum": ("optim", "momentum"),
    "nesterov": ("optim", "nesterov"),
    "wd": ("optim", "weight_decay"),
    "schedule": ("optim", "schedule"),
    "warmup": ("optim", "warmup_epochs"),
    "label_smoothing": ("optim", "label_smoothing"),
    "clip_grad": ("optim", "clip_grad"),
    "ema": ("optim", "ema_decay"),
    "lookahead": ("optim", "lookahead_steps"),
    "lookahead_alpha": ("optim", "lookahead_alpha"),
    "muon_lr": ("optim", "muon_lr"),
    "weights": ("finetune", "weights"),
    "freeze": ("finetune", "freeze"),
    "backbone_lr_mult": ("finetune", "backbone_lr_mult"),
    "bn_eval": ("finetune", "bn_eval"),
    "epochs": ("run", "epochs"),
    "seed": ("run", "seed"),
    "precision": ("run", "precision"),
    "device": ("run", "device"),
    "channels_last": ("run", "channels_last"),
    "compile": ("run", "compile"),
    "out": ("run", "out"),
    "ensemble": ("run", "ensemble"),
    "tta": ("run", "tta"),
    "tta_shift": ("run", "tta_shift"),
    "sync_bn": ("run", "sync_bn"),
    "time_limit": ("run", "time_limit"),
    "time_budget": ("run", "time_budget"),
    "threshold": ("run", "threshold"),
}


RESUME_FLAGS = ("epochs", "time_limit", "time_budget")  # what --resume may change


def duration(text: str) -> float:
    """Seconds from "3600", "90s", "45m", "1h" or "1h30m" (an argparse type)."""
    num = r"(\d+(?:\.\d+)?)"
    clean = text.replace(" ", "").lower()
    m = re.fullmatch(rf"(?:{num}h)?(?:{num}m)?(?:{num}s)?|{num}", clean)
    if m is None or not any(m.groups()):  # "1h30" is refused: 30 what?
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600, 90s, 45m, 1h30m)")
    h, mins, secs, bare = (float(g) if g else 0.0 for g in m.groups())
    return 3600 * h + 60 * mins + secs + bare


def add_parser(sub) -> None:
    """Adds `resnet train` and its flags, in groups: what, data, optimisation, fine-tuning, run."""
    p = sub.add_parser(
        "train",
        help="train or fine-tune a model (default: resnet20 on Fashion-MNIST)",
        description="Train a ResNet. With no arguments: the default model on Fashion-MNIST.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=None,
    )
    _what_flags(p.add_argument_group("what"))
    data_flags(p.add_argument_group("data"))
    optim_flags(p.add_argument_group("optimisation"))
    _finetune_flags(p.add_argument_group("fine-tuning"))
    _run_flags(p.add_argument_group("run"))
    p.set_defaults(run=run)


S = argparse.SUPPRESS  # a flag not given leaves the config's value


def _what_flags(g) -> None:
    g.add_argument("--config", help="YAML config (sections model/data/optim/finetune/run)")
    g.add_argument(
        "--recipe", help="a named recipe shipped with resnet (see `resnet train --recipes`)"
    )
    g.add_argument("--recipes", action="store_true", default=S, help="list the recipes and exit")
    g.add_argument(
        "--model",
        help="registered model name (`resnet models`), or a torchvision / timm classifier: "
        "tv:efficientnet_b0, timm:convnext_tiny, ... (`resnet models --all`)",
    )
    g.add_argument(
        "--opt",
        action="append",
        metavar="KEY=VALUE",
        default=None,
        help="model option, e.g. --opt drop_path_rate=0.1 --opt norm=group",
    )
    g.add_argument(
        "--whiten-stem",
        action="store_true",
        default=S,
        help="start the first conv from the training patches' whitening (airbench)",
    )
    g.add_argument(
        "--freeze-whitened",
        action="store_true",
        default=S,
        help="with --whiten-stem: keep the whitened first conv fixed (airbench)",
    )
    g.add_argument("--data", help="fashion-mnist, an image folder, or a CSV of path,label")
    g.add_argument(
        "--task",
        default="classify",
        choices=["classify", "detect", "segment"],
        help="what to train",
    )


def data_flags(d) -> None:
    """Adds the data flags (split, subset, augmentation, sampling) to the argument group `d`;
    `resnet compare` shares them."""
    d.add_argument("--val-split", type=float, help="held-out fraction when there is no val split")
    d.add_argument("--subset", type=int, help="train on the first N (stratified) images")
    d.add_argument("--augment", choices=PRESETS)
    d.add_argument(
        "--no-flip",
        dest="flip",
        action="store_false",
        default=S,
        help="no horizontal flips (laterality-sensitive images)",
    )
    d.add_argument(
        "--alternate-flip",
        action="store_true",
        default=S,
        help="mirror each image in every other epoch instead of at random (airbench)",
    )
    d.add_argument("--batch-size", type=int, help="global batch size")
    d.add_argument("--workers", type=int, help="DataLoader workers for streamed data")
    d.add_argument("--in-memory", choices=["auto", "yes", "no"])
    d.add_argument("--image-size", type=int, help="input side in pixels")
    d.add_argument(
        "--bad-images", choices=["skip", "error"], help="unreadable images: skip or stop"
    )
    d.add_argument(
        "--early-size",
        type=int,
        metavar="PX",
        help="progressive resizing: train the first --early-epochs at PX pixels",
    )
    d.add_argument("--early-epochs", type=int, metavar="K", help="see --early-size")
    _scan_flags(d)


def numbers(kind, count: int):
    """An argparse type: `count` comma-separated numbers of `kind` ("32,64,64")."""

    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in text.replace("x", ",").split(",")]
        except ValueError:
            values = []
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {count} numbers like 32,64,64: {text!r}")
        return values

    return parse


def _scan_flags(d) -> None:
    d.add_argument(
        "--volume",
        type=numbers(int, 3),
        metavar="D,H,W",
        help="DICOM / NIfTI scans as volumes of D,H,W voxels, for 3-D nets (resnet18_3d …)",
    )
    d.add_argument(
        "--slices",
        type=int,
        nargs="?",
        const=1,
        metavar="K",
        help="scans as 2-D slices for 2-D nets; K neighbouring slices as channels (2.5-D, odd)",
    )
    d.add_argument(
        "--window",
        metavar="NAME|W,L",
        help="scan intensities to [0, 1]: lung, mediastinum, brain, bone, W,L in HU, or minmax",
    )
    d.add_argument(
        "--spacing",
        type=numbers(float, 3),
        metavar="Z,Y,X",
        help="resample scans to this voxel size (mm), then centre-crop to --volume",
    )
    d.add_argument(
        "--group-by",
        metavar="patient|folder[:N]|COLUMN",
        help="keep each patient (a CSV column, DICOM PatientID or folder) on one side of splits",
    )
    d.add_argument(
        "--folds",
        type=int,
        metavar="K",
        help="K-fold cross-validation by group: trains all K folds and summarises them",
    )
    d.add_argument("--fold", type=int, metavar="I", help="with --folds: train only fold I (1..K)")
    d.add_argument(
        "--multilabel",
        action="store_true",
        default=S,
        help="several findings per image: a CSV label lists them as a;b (empty: none); a "
        "sigmoid per label",
    )
    d.add_argument(
        "--balance",
        choices=["none", "loss", "sampler"],
        help="imbalanced classes: class-weighted loss or a class-balanced sampler",
    )


def optim_flags(o) -> None:
    """Adds the optimisation flags (optimiser, rates, schedule, regularisation) to the argument
    group `o`; `resnet compare` shares them."""
    o.add_argument(
        "--optimizer",
        choices=["sgd", "adamw", "muon"],
        help="muon: Muon for the conv filters, SGD (--lr) for the rest",
    )
    o.add_argument("--muon-lr", type=float, help="--optimizer muon: the filters' peak rate")
    o.add_argument("--lr", type=float, help="peak learning rate")
    o.add_argument("--momentum", type=float)
    o.add_argument("--no-nesterov", dest="nesterov", action="store_false", default=S)
    o.add_argument("--wd", type=float, help="weight decay (not on norms and biases)")
    o.add_argument("--schedule", choices=["step", "cosine", "onecycle", "constant"])
    o.add_argument("--warmup", type=float, help="warm-up epochs")
    o.add_argument("--label-smoothing", type=float)
    o.add_argument("--clip-grad", type=float, help="clip the gradient norm")
    o.add_argument("--ema", type=float, metavar="DECAY", help="evaluate an EMA of the weights")
    o.add_argument(
        "--lookahead",
        type=int,
        metavar="K",
        help="lookahead: every K steps pull the weights back towards slow weights",
    )
    o.add_argument(
        "--lookahead-alpha",
        type=float,
        metavar="A",
        help="lookahead: how far the slow weights move each time (default 0.5)",
    )


def _finetune_flags(f) -> None:
    f.add_argument("--weights", help="torchvision:IMAGENET1K_V2, timm:resnet50.a1_in1k, a file...")
    f.add_argument("--freeze", help="none | backbone | stages:K")
    f.add_argument("--backbone-lr-mult", type=float)
    f.add_argument("--bn-eval", action="store_true", default=S, help="freeze BatchNorm statistics")


def _run_flags(r) -> None:
    r.add_argument("--epochs", type=int)
    r.add_argument("--seed", type=int)
    r.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    r.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    r.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=S)
    r.add_argument("--compile", action="store_true", default=S, help="torch.compile the model")
    r.add_argument("--tta", action="store_true", default=S, help="flip test-time augmentation")
    r.add_argument(
        "--tta-shift",
        type=int,
        metavar="PX",
        help="also evaluate views moved PX pixels each way (airbench's TTA: 1)",
    )
    r.add_argument("--sync-bn", action="store_true", default=S, help="SyncBatchNorm (distributed)")
    r.add_argument(
        "--time-limit",
        type=duration,
        metavar="TIME",
        help="stop after the epoch that passes TIME of training (3600, 90s, 45m, 1h; "
        "the whole run's, resumed parts included; with --resume: a new limit)",
    )
    r.add_argument(
        "--time-budget",
        type=duration,
        metavar="TIME",
        help="train as many epochs as fit in TIME of training (at most --epochs), "
        "re-planned after each epoch, so the learning-rate schedule ends when "
        "the budget is spent (with --resume: a new budget)",
    )
    r.add_argument("--out", help="run folder (default runs/<model>-<data>)")
    r.add_argument(
        "--threshold",
        metavar="P|youden",
        help="operating point of the reported sensitivity / specificity (default youden)",
    )
    r.add_argument(
        "--ensemble",
        type=int,
        metavar="K",
        help="train K nets (seeds seed..seed+K-1) into RUN/member0.. and evaluate and "
        "predict with the mean of their probabilities (--time-limit and "
        "--time-budget then apply to each member)",
    )
    r.add_argument("--resume", metavar="RUN", help="continue the run in this folder from last.pt")
    r.add_argument("--nproc", type=int, help="start N processes on this machine (torchrun)")
    r.add_argument("--quiet", action="store_true", default=S, help="no progress bars")


def _parse_value(text: str):
    """`--opt` values: numbers (1e-3 included), booleans, strings."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def scan_recipe(args) -> str | None:
    """The recipe scans start from when no --recipe or --config is given: scans2d for a 2-D
    net or --slices, scans3d otherwise; None for data that are not DICOM / NIfTI scans."""
    if args.recipe or args.config or not args.data or args.data.lower() in BUILTIN:
        return None
    root = Path(args.data).expanduser()
    if not root.exists() or not is_scan_source(root):
        return None
    two_d = args.slices is not None or (
        args.model is not None and args.volume is None and get_entry(args.model).dims == 2
    )
    return "scans2d" if two_d else "scans3d"


def config_from_args(args) -> TrainConfig:
    """The TrainConfig the flags describe: a recipe, then a YAML file, then the flags given.

    Scans (DICOM / NIfTI) without a recipe or config start from `scan_recipe`'s."""
    recipe = args.recipe or scan_recipe(args)
    cfg = load_recipe(recipe) if recipe else TrainConfig()
    if args.config:  # the file's own keys override the recipe; unset keys keep the recipe's
        cfg = cfg.updated(TrainConfig.read_yaml(args.config))
    overrides: dict = {}
    if args.optimizer == "adamw" and args.lr is None and cfg.optim.optimizer != "adamw":
        overrides["optim"] = {"lr": 1e-3, "weight_decay": 0.05}  # SGD's 0.1 would diverge
    for flag, (section, key) in FLAG_MAP.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    if args.opt:
        opts = {}
        for item in args.opt:
            if "=" not in item:
                raise ResNetError(f"--opt takes KEY=VALUE, got {item!r}")
            k, v = item.split("=", 1)
            opts[k.strip()] = _parse_value(v)
        overrides.setdefault("model", {})["options"] = opts
    if overrides.get("data", {}).get("fold") is not None:
        overrides["data"]["fold"] -= 1  # 1-based on the command line, 0-based in the config
    cfg = cfg.updated(overrides) if overrides else cfg
    if getattr(args, "lookahead_alpha", None) is not None and not cfg.optim.lookahead_steps:
        raise ResNetError("--lookahead-alpha needs --lookahead K (the steps between syncs)")
    if getattr(args, "muon_lr", None) is not None and cfg.optim.optimizer != "muon":
        raise ResNetError("--muon-lr needs --optimizer muon (the other optimisers use --lr)")
    return cfg


def run(args) -> int:
    """`resnet train`: lists recipes, launches processes, trains a task or a classifier."""
    if getattr(args, "recipes", False):
        for name, text in list_recipes().items():
            print(f"{name:12s} {text}")
        return 0
    if args.nproc and args.nproc > 1:
        if not args.resume and config_from_args(args).run.ensemble > 1:
            raise ResNetError(
                "an ensemble trains in one process (members one after another); "
                "drop --nproc, or train each member with its own --seed and --out"
            )

        return launch_local(args.nproc, getattr(args, "argv", None))
    if args.task != "classify":
        cfg = config_from_args(args)
        summary = tasks.train_task(args.task, cfg.to_dict())
        shown = {k: v for k, v in summary.items() if not isinstance(v, list | dict)}
        print("summary: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
        return 0

    progress = not getattr(args, "quiet", False)
    if args.resume:
        if not Path(args.resume).exists():
            raise ResNetError(f"nothing to resume at {args.resume}")
        given = [
            f for f in FLAG_MAP if f not in RESUME_FLAGS and getattr(args, f, None) is not None
        ]
        given += [f for f in ("config", "recipe", "opt") if getattr(args, f, None)]
        if given:
            raise ResNetError(
                f"--resume continues the run as it was configured; it takes only "
                f"--epochs, --time-limit and --time-budget "
                f"(got --{given[0].replace('_', '-')})"
            )
        train(
            resume=args.resume,
            epochs=args.epochs,
            time_limit=args.time_limit,
            time_budget=args.time_budget,
            progress=progress,
        )
        return 0
    cfg = config_from_args(args)
    if not args.recipe and scan_recipe(args):
        print(f"scans: starting from the {scan_recipe(args)} recipe (see `resnet train --recipes`)")
    train(cfg, progress=progress)
    return 0
