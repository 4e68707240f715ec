"""`resnet doctor`: one line per check, a failing check fails the command."""

from __future__ import annotations

import json

from resnet.cli import main


def test_doctor_reports_every_check_and_passes_here(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("RESNET_CACHE", str(tmp_path / "cache"))
    assert main(["doctor", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    checks = {r["check"]: r for r in rows}
    assert {"versions", "cpu", "gpu", "onnxruntime", "cache", "self-test"} <= set(checks)
    assert checks["cache"]["status"] == "ok" and (tmp_path / "cache").is_dir()
    assert checks["self-test"]["status"] == "ok" and "loss" in checks["self-test"]["detail"]
    assert all(r["status"] in ("ok", "warn", "FAIL") for r in rows)


def test_an_unwritable_cache_fails_with_one_line(capsys, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RESNET_CACHE", str(blocker / "cache"))
    assert main(["doctor", "--no-self-test"]) == 1
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("FAIL")]
    assert len(lines) == 1 and "cache" in lines[0] and "RESNET_CACHE" in lines[0]


def test_a_missing_optional_package_is_a_warning_naming_pip(capsys, monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "nibabel":
            raise ModuleNotFoundError("No module named 'nibabel'")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    assert main(["doctor", "--no-self-test"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if " nibabel " in ln)
    assert line.startswith("warn") and "pip install nibabel" in line
