"""`resnet compare`: models trained alike into their own run folders, measured here, reported
as a table, CSV, JSON and plots; an interrupted comparison resumes without retraining."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import threading

from resnet.cli import build_parser, main
from resnet.cli.compare import plan_from_args
from resnet.cli.train import config_from_args
from resnet.compare import compare, pareto_front, run_folder
from resnet.engine.checkpoint import load_model
from resnet.models import build, count_params

MODELS = ("fast_resnet8_24", "fast_plain8_24")  # two small nets with different parameter counts
PLOTS = ("accuracy_vs_latency.png", "accuracy_vs_params.png", "accuracy_vs_train_time.png")


def _argv(data, out, *extra) -> list[str]:
    return [
        "compare",
        "--data",
        str(data),
        "--models",
        ",".join(MODELS),
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--out",
        str(out),
        "--backends",
        "eager",
        "--timing-seconds",
        "0.05",
        "--quiet",
        *extra,
    ]


def _main(argv: list[str]) -> tuple[int, str, str]:
    """`resnet ARGV` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse refuses a flag with exit code 2
            code = e.code
    return code, out.getvalue(), err.getvalue()


def _stopped_first_run(data, out) -> dict:
    """The comparison the CLI would run, stopped inside its first run (a resumable last.pt)."""
    args = build_parser().parse_args(_argv(data, out))
    stop = threading.Event()
    stop.set()  # the first run trains one step, then stops at the next step boundary
    return compare(
        config_from_args(args), plan_from_args(args), progress=False, log=None, stop=stop
    )


def _check_report(out) -> None:
    """compare.md, compare.csv and compare.json hold one sane row per model; the plots exist."""
    table = [line for line in (out / "compare.md").read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[:5] == ["model", "top-1 %", "seeds", "params", "MACs"]
    assert {"latency ms @1", "img/s @32", "train img/s", "peak MB", "backend"} <= set(header)
    rows = {r.split("|")[1].strip(): r for r in table[2:]}
    assert set(rows) == set(MODELS) and "±" in rows[MODELS[0]]  # two seeds: a spread
    by_model = {r["model"]: r for r in csv.DictReader(open(out / "compare.csv"))}
    record = json.loads((out / "compare.json").read_text())
    for m in MODELS:
        row = by_model[m]
        model, _ = load_model(run_folder(out, m, 0))
        params = count_params(build(m, num_classes=10, in_chans=1))
        assert int(row["params"]) == params == count_params(model)
        assert int(row["macs"]) > params  # 16 px digits: every weight used more than once
        assert 0.0 <= float(row["accuracy_mean"]) <= 1.0 and row["split"] == "val"
        assert row["seeds_done"] == "2" and row["backend"] == "eager_fp32"
        assert float(row["latency_ms"]) > 0 and float(row["throughput_img_s"]) > 0
        assert float(row["train_img_s"]) > 0 and float(row["peak_memory_mb"]) > 50
        accs = [record["runs"][f"{m}/seed{s}"]["accuracy"] for s in (0, 1)]
        assert abs(float(row["accuracy_mean"]) - sum(accs) / 2) < 1e-9
    assert by_model[MODELS[0]]["params"] != by_model[MODELS[1]]["params"]
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_compare_trains_measures_reports_and_resumes_without_retraining(digits_folder, tmp_path):
    out = tmp_path / "cmp"
    first = _stopped_first_run(digits_folder, out)
    stopped = run_folder(out, MODELS[0], 0)
    assert first["runs"][f"{MODELS[0]}/seed0"]["status"] == "stopped"
    assert (stopped / "last.pt").exists() and not (stopped / "summary.json").exists()

    code, stdout, err = _main(_argv(digits_folder, out))  # resumes the stopped run
    assert code == 0, err
    assert f"{MODELS[0]}/seed0: resuming" in stdout and stdout.count(": training into") == 3
    _check_report(out)
    record = json.loads((out / "compare.json").read_text())
    trained = {k: r["trained"] for k, r in record["runs"].items()}
    assert trained == {f"{m}/seed{s}": 1 for m in MODELS for s in (0, 1)} | {
        f"{MODELS[0]}/seed0": 2
    }
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/*.pt")}
    assert len(mtimes) == 8  # last.pt and best.pt of 4 runs

    code, stdout, err = _main(_argv(digits_folder, out))  # everything done: nothing retrained
    assert code == 0, err
    assert stdout.count("finished already, kept") == 4 and "training into" not in stdout
    assert stdout.count("inference measured already, kept") == 2
    again = json.loads((out / "compare.json").read_text())
    assert {k: r["trained"] for k, r in again["runs"].items()} == trained
    assert again["invocations"] == 3 and again["inference"] == record["inference"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/*.pt")} == mtimes

    code, _, err = _main(_argv(digits_folder, out, "--lr", "0.01"))
    assert code == 2 and "other settings (optim.lr: 0.1 -> 0.01)" in err, err


def test_an_unknown_model_fails_in_one_line_before_anything_trains(digits_folder, tmp_path):
    out = tmp_path / "cmp"
    argv = _argv(digits_folder, out)
    argv[argv.index("--models") + 1] = f"{MODELS[0]},resnet_nonesuch"
    code, stdout, err = _main(argv)
    assert code == 2 and err.count("\n") == 1 and "unknown model 'resnet_nonesuch'" in err
    assert "Traceback" not in err and not out.exists()
    argv[argv.index("--models") + 1] = MODELS[0]
    argv[argv.index("--backends") + 1] = "fastest"
    code, _, err = _main(argv)
    assert code == 2 and "unknown backend 'fastest'" in err and not out.exists()


def test_pareto_front_keeps_the_points_nothing_beats():
    # (cost, accuracy): cheaper and at least as accurate beats; ties in both do not.
    points = [(1.0, 0.50), (2.0, 0.70), (3.0, 0.60), (2.0, 0.50), (4.0, 0.90), (4.0, 0.90)]
    assert pareto_front(points) == [0, 1, 4, 5]
    assert pareto_front([]) == []
