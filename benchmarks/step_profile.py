"""Where a training step's time goes: torch.profiler over a few SGD steps of one net on 28x28
grey images (bf16 autocast where the CPU has it, channels_last, the speed run's batch), grouped
by operator and input shape, plus the share of convolution forward/backward and BatchNorm.

    .venv/bin/python benchmarks/step_profile.py [--model fast_resnet8_24] [--batch 512]
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import resnet
from resnet.device import cpu_has_bf16

KINDS = {
    "conv backward": ("aten::convolution_backward",),
    "conv forward": ("aten::mkldnn_convolution", "aten::_convolution_pointwise"),
    "BatchNorm": ("aten::native_batch_norm", "aten::native_batch_norm_backward"),
    "activation": ("aten::threshold_backward", "aten::relu_", "aten::clamp_min_"),
    "max-pool": ("aten::max_pool2d_with_indices", "aten::max_pool2d_with_indices_backward"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="fast_resnet8_24")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rows", type=int, default=15)
    args = ap.parse_args()
    dtype = torch.bfloat16 if cpu_has_bf16() else None
    torch.manual_seed(0)
    model = resnet.create(args.model, num_classes=10, in_chans=1)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    x = torch.randn(args.batch, 1, 28, 28).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x).float(), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    with (
        warnings.catch_warnings(),
        profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof,
    ):
        warnings.simplefilter("ignore")
        for _ in range(args.steps):
            step()
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(
        f"{args.model}, batch {args.batch}, {'bf16' if dtype else 'fp32'}, "
        f"{torch.get_num_threads()} threads: {total / args.steps / 1e3:.1f} ms a step"
    )
    print("| part | share |\n|---|---:|")
    for kind, names in KINDS.items():
        t = sum(e.self_cpu_time_total for e in events if e.key in names)
        print(f"| {kind} | {100 * t / total:.0f} % |")
    print("\n| operator | first input shape | ms a call | calls a step | share |")
    print("|---|---|---:|---:|---:|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.rows]:
        shape = e.input_shapes[0] if e.input_shapes else ""
        print(
            f"| {e.key} | {shape} | {e.self_cpu_time_total / e.count / 1e3:.2f} | "
            f"{e.count // args.steps} | {100 * e.self_cpu_time_total / total:.1f} % |"
        )


if __name__ == "__main__":
    main()
