"""The maskwatch command table: usage and config errors, no traceback, the subcommands it wires (demo, install-service)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agent.cli import main


def test_usage_and_config_errors_exit_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["detect"])
    assert e.value.code == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("detector:\n  min_scroe: 0.5\n")
    assert main(["detect", "--config", str(bad), "x.jpg"]) == 2
    assert "did you mean `min_score`?" in capsys.readouterr().err
    missing_models = tmp_path / "m.yaml"
    missing_models.write_text("detector:\n  model: nowhere/det.json\n")
    assert main(["detect", "--config", str(missing_models), "x.jpg"]) == 2
    assert "sidecar not found" in capsys.readouterr().err


def test_no_traceback_from_the_console(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tracker:\n  window: many\n")
    r = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(bad)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "`tracker.window`" in r.stderr


def test_demo_alerts_on_the_unmasked(capsys, models_config, tmp_path):
    from agent.tools.demo import DEFAULT_PEOPLE

    assert main(["demo", "--config", str(models_config), "--out", str(tmp_path)]) == 0
    cap = capsys.readouterr()
    lines = [json.loads(ln) for ln in cap.out.splitlines()]
    assert {ln["type"] for ln in lines} == {"alert"}
    got = [ln for ln in lines if ln["type"] == "alert"]
    assert len(got) == sum(not p.masked for p in DEFAULT_PEOPLE)
    assert "demo:" in cap.err


def test_install_service_is_a_subcommand(capsys, tmp_path):
    rc = main(["install-service", "--dry-run", "--prefix", str(tmp_path)])
    out = capsys.readouterr()
    assert rc in (0, 2), out.err  # 2 only with a user-level reason printed
    assert (out.out if rc == 0 else out.err).strip()
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing
