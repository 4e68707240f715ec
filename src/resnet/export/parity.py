"""Parity of an exported model with the eager one: max |logit difference| and top-1 agreement."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from ..errors import ResNetError


class ParityError(ResNetError):
    """An export's outputs differ from the eager model's beyond tolerance."""


@dataclass
class ParityReport:
    """What `check_parity` measured."""

    runtime: str
    images: int
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    tolerance: float
    top1_agreement: float
    top1_disagreements: int
    near_ties: int
    ok: bool
    min_agreement: float | None = None

    def line(self) -> str:
        """One line for the terminal: verdict, runtime, images, max difference, agreement."""
        sizes = " and ".join(str(b) for b in self.batch_sizes)
        verdict = "ok" if self.ok else "FAILED"
        judged = (
            f"tolerance {self.tolerance:.1e}"
            if self.min_agreement is None
            else f"not judged: quantized; need agreement >= {self.min_agreement:.0%}"
        )
        return (
            f"parity {verdict} ({self.runtime} vs eager, {self.images} real images, batch "
            f"{sizes}): max |logit diff| {self.max_abs_diff:.2e} ({judged}), "
            f"top-1 agreement {self.top1_agreement:.1%}"
        )

    def to_dict(self) -> dict:
        """The report as a JSON-ready dict."""
        d = asdict(self)
        d["batch_sizes"] = list(self.batch_sizes)
        return d


def _run_batched(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_sizes: Sequence[int]
) -> torch.Tensor:
    """Runs `fn` over `x` in chunks whose sizes cycle through `batch_sizes`."""
    outs, i, k = [], 0, 0
    while i < len(x):
        b = batch_sizes[k % len(batch_sizes)]
        chunk = x[i : i + b]
        if len(chunk) < b and len(batch_sizes) == 1 and len(x) >= b > 1:
            chunk = x[-b:]  # a fixed-batch model needs full chunks: overlap the last one
            outs.append(fn(chunk).float()[b - (len(x) - i) :])
        else:
            outs.append(fn(chunk).float())
        i += b
        k += 1
    return torch.cat(outs)


@torch.no_grad()
def check_parity(
    reference: Callable[[torch.Tensor], torch.Tensor],
    candidate: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    *,
    runtime: str = "export",
    batch_sizes: Sequence[int] = (1, 5),
    atol: float = 1e-3,
    rtol: float = 1e-3,
    min_agreement: float | None = None,
    raise_on_failure: bool = True,
) -> ParityReport:
    """Compares `candidate(x)` with `reference(x)` on `inputs`, fed in batches of `batch_sizes`.

    Passes when max |diff| <= atol + rtol * max |reference logit| and top-1 agrees on every image
    whose reference top-2 margin exceeds twice that tolerance (near-ties may flip legitimately).
    With `min_agreement` (quantized models, whose logits legitimately move), it passes when the
    top-1 agreement reaches that fraction; the logit difference is reported, not judged.

    Raises:
        ParityError: on failure, when `raise_on_failure`.
    """
    ref = reference(inputs).float()
    got = _run_batched(candidate, inputs, list(batch_sizes))
    if got.shape != ref.shape:
        raise ParityError(
            f"parity FAILED ({runtime}): output shape {tuple(got.shape)} != "
            f"eager {tuple(ref.shape)}"
        )
    tol = atol + rtol * float(ref.abs().max())
    diff = float((got - ref).abs().max()) if torch.isfinite(got).all() else float("inf")
    agree = ref.argmax(1) == got.argmax(1)
    agreement = float(agree.double().mean())  # float64: 19 of 20 is 0.95, not 0.9499999
    if ref.shape[1] > 1:
        top2 = ref.topk(2, dim=1).values
        tie = (top2[:, 0] - top2[:, 1]) <= 2 * tol
    else:
        tie = torch.zeros(len(ref), dtype=torch.bool)
    if min_agreement is None:
        ok = diff <= tol and bool((agree | tie).all())
    else:
        ok = agreement >= min_agreement and diff < float("inf")
    report = ParityReport(
        runtime=runtime,
        images=len(inputs),
        batch_sizes=tuple(batch_sizes),
        max_abs_diff=diff,
        tolerance=tol,
        min_agreement=min_agreement,
        top1_agreement=agreement,
        top1_disagreements=int((~agree).sum()),
        near_ties=int(tie.sum()),
        ok=ok,
    )
    if not ok and raise_on_failure:
        raise ParityError(report.line())
    return report


@torch.no_grad()
def top1_agreement(
    reference: Callable[[torch.Tensor], torch.Tensor],
    candidate: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    batch_size: int = 32,
) -> float:
    """Fraction of `inputs` on which both callables give the same top-1 class."""
    ref = _run_batched(reference, inputs, [batch_size]).argmax(1)
    got = _run_batched(candidate, inputs, [batch_size]).argmax(1)
    return float((ref == got).float().mean())
