"""Training speed of registered nets on 28x28 grey images: one process, nets alternated.

Each round runs `--steps` timed SGD steps (bf16 autocast where the CPU has it, channels_last,
random data, the speed run's optimiser) of every net in turn; a net's figure is its best round,
so a burst of load from other machines' jobs hits every net alike. The MACs are the forward
convolutions' and linear layers' multiply-accumulates per image.

    .venv/bin/python benchmarks/fast_nets.py [--models fast_resnet8_24,fast_resnet8] [--batch 512]

A model may carry variants after "+": ResNet options (`act=gelu`, `global_pool=max`), the spec's
`stride_on=pool`, or `optimizer=muon` (Muon for the filters at lr 0.05, SGD for the rest):

    .venv/bin/python benchmarks/fast_nets.py --models \
        fast_resnet8_24,fast_resnet8_24+act=gelu,fast_resnet8_24+stride_on=pool,fast_resnet8_24+optimizer=muon
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F

from resnet.device import cpu_has_bf16
from resnet.engine.config import OptimConfig
from resnet.engine.optim import build_optimizer
from resnet.models import ResNet, count_params, get_entry
from resnet.models.registry import count_macs

DEFAULT = "fast_resnet8_24,fast_resnet8_32,fast_resnet8,fast_resnet8_64,fast_resnet14,resnet20"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=DEFAULT)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    dtype = torch.bfloat16 if cpu_has_bf16() else None
    x = torch.randn(args.batch, 1, 28, 28).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    nets = {}
    for item in args.models.split(","):
        name, *variants = item.split("+")
        options = dict(v.split("=", 1) for v in variants)
        optimizer = options.pop("optimizer", "sgd")
        spec = get_entry(name).spec
        spec = dataclasses.replace(spec, stride_on=options.pop("stride_on", spec.stride_on))

        def build(spec=spec, options=options) -> ResNet:
            return ResNet(spec, num_classes=10, in_chans=1, **options)

        torch.manual_seed(0)
        model = build().to(memory_format=torch.channels_last)
        opt = build_optimizer(model, OptimConfig(optimizer=optimizer, lr=0.1, muon_lr=0.05))
        with torch.device("meta"):
            macs = count_macs(build(), 28, 1)
        nets[item] = (model, opt, macs, count_params(model))

    def step(model, opt) -> None:
        with torch.autocast("cpu", dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x).float(), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    speed: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(args.rounds):
        for name, (model, opt, _, _) in nets.items():
            for _ in range(2):
                step(model, opt)
            t = time.perf_counter()
            for _ in range(args.steps):
                step(model, opt)
            speed[name].append(args.steps * args.batch / (time.perf_counter() - t))
    print(
        f"batch {args.batch}, {torch.get_num_threads()} threads, "
        f"{'bf16' if dtype else 'fp32'}, best of {args.rounds} rounds of {args.steps} steps"
    )
    print("| net | params | MACs | img/s |\n|---|---:|---:|---:|")
    for name, (_, _, macs, params) in nets.items():
        print(f"| {name} | {params / 1e6:.2f} M | {macs / 1e6:.1f} M | {max(speed[name]):,.0f} |")


if __name__ == "__main__":
    main()
