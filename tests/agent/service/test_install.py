"""install-service into a temporary staging prefix (never the real /etc)."""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

from agent.pipeline.detect import DetectorConfig
from agent.service.install import (
    HIDDEN_FROM_SERVICE, InstallError, add_arguments, hidden_from_service, install_service, model_files,
    render_unit, run, systemd_quote, verify_unit,
)

REPO = Path(__file__).resolve().parents[3]
UNIT = REPO / "systemd" / "maskwatch.service"


@pytest.fixture
def models(tmp_path) -> Path:
    """A models folder with one real model pair (the default detector) and a parity report."""
    src = REPO / DetectorConfig().model
    if not src.is_file():
        pytest.skip(f"{src} is not built yet")
    d = tmp_path / "models-src"
    d.mkdir()
    meta = json.loads(src.read_text())
    shutil.copy(src, d)
    shutil.copy(src.parent / meta["model_file"], d)
    (d / f"{src.stem}.parity.json").write_text('{"not": "a sidecar"}')
    (d / "NOTICE").write_text("notice\n")
    return d


@pytest.fixture
def exe(tmp_path) -> Path:
    """An executable standing in for the maskwatch script, outside /home and /root."""
    p = tmp_path / "bin" / "maskwatch"
    p.parent.mkdir()
    p.write_text("#!/bin/sh\nexit 0\n")
    p.chmod(0o755)
    return p


def _settings(text: str) -> dict:
    out: dict = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_writes_unit_config_and_models_under_the_prefix(tmp_path, models, exe):
    prefix = tmp_path / "root"
    report = install_service(UNIT, exec_path=exe, models_src=models, prefix=prefix)
    unit = prefix / "etc/systemd/system/maskwatch.service"
    s = _settings(unit.read_text())
    # The unit names the final paths, not the staging prefix.
    assert s["ExecStart"] == [f"{exe} run --config /etc/maskwatch/config.yaml"]
    assert s["Documentation"] == ["file:///etc/maskwatch/config.yaml"]
    assert s["ConfigurationDirectory"] == ["maskwatch"]
    # Everything else of the hardened template is kept.
    template = _settings(UNIT.read_text())
    for key in ("Type", "WatchdogSec", "DynamicUser", "ProtectSystem", "DeviceAllow", "SystemCallFilter"):
        assert s[key] == template[key]
    config = prefix / "etc/maskwatch/config.yaml"
    assert config.read_bytes() == (REPO / "config.yaml").read_bytes() and report.config_written
    installed = sorted(p.name for p in (prefix / "etc/maskwatch/models").iterdir())
    stem = Path(DetectorConfig().model).stem
    assert installed == ["NOTICE", f"{stem}.json", f"{stem}.tflite"]  # no parity report
    for p in [unit, config, *(prefix / "etc/maskwatch/models").iterdir()]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644  # readable by the service's dynamic user
    # The default config's relative model path finds the copied model.
    from agent.config import load

    cfg = load(config)
    assert cfg.detector.model == str((prefix / "etc/maskwatch/models" / f"{stem}.json").resolve())
    assert any("systemctl daemon-reload && systemctl enable --now maskwatch" in s for s in report.next_steps)


def test_existing_config_is_never_overwritten(tmp_path, models, exe):
    prefix = tmp_path / "root"
    mine = prefix / "etc/maskwatch/config.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("runtime:\n  camera: my-door\n")
    report = install_service(UNIT, exec_path=exe, models_src=models, prefix=prefix)
    assert mine.read_text() == "runtime:\n  camera: my-door\n"
    assert not report.config_written
    assert any(line.startswith("kept ") and "never overwritten" in line for line in report.done)
    assert (prefix / "etc/systemd/system/maskwatch.service").is_file()


def test_dry_run_writes_nothing(tmp_path, models, exe):
    prefix = tmp_path / "root"
    report = install_service(UNIT, exec_path=exe, models_src=models, prefix=prefix, dry_run=True)
    assert not prefix.exists()
    assert report.done[0].startswith("would write") and report.config_written


def test_command_prints_steps_and_user_errors_are_one_message(tmp_path, models, exe):
    p = argparse.ArgumentParser()
    add_arguments(p)
    out, err = io.StringIO(), io.StringIO()
    args = p.parse_args(["--prefix", str(tmp_path / "root"), "--exec", str(exe), "--models", str(models)])
    assert run(args, out, err) == 0
    assert "systemctl enable --now maskwatch" in out.getvalue() and "Traceback" not in err.getvalue()
    # --enable acts on the live system: refused with a staging prefix.
    args = p.parse_args(["--prefix", str(tmp_path / "r2"), "--enable", "--exec", str(exe)])
    assert run(args, out, err) == 2
    assert "--enable" in err.getvalue() and not (tmp_path / "r2").exists()
    # A folder without models.
    err = io.StringIO()
    args = p.parse_args(["--prefix", str(tmp_path / "r3"), "--exec", str(exe), "--models", str(tmp_path)])
    assert run(args, out, err) == 2
    assert "no model sidecar" in err.getvalue() and "fix:" in err.getvalue()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_no_permission_is_a_clear_error(tmp_path, models, exe):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(InstallError, match="permission denied"):
        install_service(UNIT, exec_path=exe, models_src=models, prefix=locked)


def test_model_not_matching_its_sidecar_is_refused(tmp_path, models):
    with open(models / f"{Path(DetectorConfig().model).stem}.tflite", "ab") as f:
        f.write(b"\0")
    with pytest.raises(InstallError, match="model_sha256"):
        model_files(models)


def test_unit_rendering_quotes_and_relocates():
    text = render_unit(UNIT.read_text(), "/opt/my venv/bin/maskwatch", "/srv/mw/config.yaml")
    s = _settings(text)
    assert s["ExecStart"] == ['"/opt/my venv/bin/maskwatch" run --config /srv/mw/config.yaml']
    assert "ConfigurationDirectory" not in s  # only meaningful under /etc
    assert systemd_quote("50%$x") == "50%%$$x"


def test_paths_hidden_by_protect_home_are_reported(tmp_path, monkeypatch):
    home_script = Path("/home/someone/venv/bin/maskwatch")
    assert "ProtectHome" in (hidden_from_service(home_script) or "")
    for top in ("/tmp", "/var/tmp"):  # where tmp_path is: here only the script's interpreter counts
        monkeypatch.delitem(HIDDEN_FROM_SERVICE, top)
    script = tmp_path / "maskwatch"
    script.write_text("#!/root/venv/bin/python\n")
    assert "/root" in (hidden_from_service(script) or "")
    assert hidden_from_service(Path("/opt/maskwatch/venv/bin/maskwatch")) is None


def test_paths_hidden_by_private_tmp_are_reported(tmp_path, models, exe):
    """The unit's PrivateTmp=yes hides /tmp and /var/tmp: a venv, a config or staged files there."""
    assert "PrivateTmp=yes" in (hidden_from_service(Path("/tmp/venv/bin/maskwatch")) or "")
    assert "PrivateTmp=yes" in (hidden_from_service(Path("/var/tmp/mw/bin/maskwatch")) or "")
    staged = Path("/tmp") / f"mw-stage-{os.getpid()}"
    try:
        report = install_service(UNIT, exec_path="/opt/maskwatch/venv/bin/maskwatch", models_src=models,
                                 prefix=staged)
        (warning,) = [w for w in report.warnings if w.startswith("staged under")]
        assert str(staged) in warning and "PrivateTmp=yes" in warning and "/etc/maskwatch/config.yaml" in warning
        assert "fix:" in warning
        report = install_service(UNIT, exec_path="/opt/maskwatch/venv/bin/maskwatch", models_src=models,
                                 config_dir="/tmp/maskwatch-etc", prefix=tmp_path / "root")
        assert any("cannot read its config" in w and "PrivateTmp=yes" in w for w in report.warnings)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_written_unit_passes_systemd_analyze_verify(tmp_path, models):
    # A real executable, so verify's ExecStart check runs against something that exists.
    report = install_service(UNIT, exec_path=sys.executable, models_src=models, prefix=tmp_path / "root")
    unit = tmp_path / "root" / report.unit_path.lstrip("/")
    assert verify_unit(unit) is None
    assert not any(w.startswith("systemd-analyze") for w in report.warnings)
    # And it does catch a broken unit.
    unit.write_text(unit.read_text().replace("Type=notify", "Type=notifyy"))
    assert verify_unit(unit)
