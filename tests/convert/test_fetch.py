"""convert.fetch: what pip is asked for, and a failure named (pip itself is not under test)."""

import subprocess

import pytest

from convert.errors import ConvertError
from convert.fetch import pip_download


@pytest.mark.parametrize("source", [False, True])
def test_pip_download_asks_for_the_archive_kind_and_names_a_failure(tmp_path, monkeypatch, source):
    calls = []

    def fake_run(cmd, **kw):  # pip itself is not under test: what it is asked for, and the outcome
        calls.append(cmd)
        (tmp_path / ("pkg-1.0.tar.gz" if source else "pkg-1.0-py3-none-any.whl")).write_bytes(b"x")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    got = pip_download("pkg==1.0", tmp_path, source=source)
    assert got.name.endswith(".tar.gz" if source else ".whl")
    # a wheel only from wheels; a source package without --no-binary, which would also force its
    # build dependencies (numpy) to build from source
    assert ("--only-binary=:all:" in calls[0]) is not source and not any("no-binary" in a for a in calls[0])
    assert "--no-deps" in calls[0]
    for f in tmp_path.iterdir():
        f.unlink()
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "no such version"))
    with pytest.raises(ConvertError, match="pip download pkg==1.0 failed: no such version"):
        pip_download("pkg==1.0", tmp_path, source=source)
