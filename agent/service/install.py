"""``maskwatch install-service``: install the systemd unit, a default config and the models.

What it writes (under ``--prefix`` when given, a staging root like ``DESTDIR``: the files land
under it but name the final paths):

* ``/etc/systemd/system/maskwatch.service``: the repo's ``systemd/maskwatch.service`` with
  ``ExecStart`` pointing at the ``maskwatch`` script of the Python environment running this command;
* ``/etc/maskwatch/config.yaml``: the repo's ``config.yaml``, only when no config is there yet (an
  existing one is never overwritten; the command says so);
* ``/etc/maskwatch/models/``: every model pair (sidecar ``.json`` + ``.tflite``, checked against
  the sidecar's ``model_sha256``) plus ``NOTICE``/``SHA256SUMS``/``MODEL_CARD.md``. The default
  config names ``models/...`` relative to its own folder, so it finds them there. Models are
  copied, not referenced in the checkout, because the unit runs as a dynamic user with
  ``ProtectHome=yes``: a checkout under /home or /root is invisible to it. They are replaced on
  every install (they belong to the release, not to the user).

It prints the ``systemctl`` steps and runs them only with ``--enable``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, List, Optional, Sequence, Tuple

from agent.config import repo_root
from agent.model import sha256_of

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MODEL_EXTRAS = ("NOTICE", "SHA256SUMS", "MODEL_CARD.md")
# Folders the unit hides from the service, and the setting that hides them.
HIDDEN_FROM_SERVICE = {"/home": "ProtectHome=yes", "/root": "ProtectHome=yes", "/run/user": "ProtectHome=yes",
                       "/tmp": "PrivateTmp=yes", "/var/tmp": "PrivateTmp=yes"}


class InstallError(Exception):
    """A problem the user fixes (missing file, no permission); ``str()`` is the whole message."""


@dataclass
class InstallReport:
    """What ``install_service`` did (or, in a dry run, would do), in order."""

    unit_path: str  # final path of the unit (without the prefix)
    config_path: str
    exec_start: str
    dry_run: bool
    done: List[str] = field(default_factory=list)  # one line per file action
    warnings: List[str] = field(default_factory=list)
    next_steps: List[str] = field(default_factory=list)
    config_written: bool = False


def find_exec() -> Path:
    """The ``maskwatch`` script of the running environment.

    The command's own script first (``sys.argv[0]``), then the one beside the interpreter (a
    venv's ``bin/``), then ``$PATH``. The interpreter path is not resolved: a venv's ``python``
    is a symlink whose target is not the venv.
    """
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    candidates = []
    if argv0 is not None and argv0.name == "maskwatch":
        candidates.append(argv0.absolute())
    candidates.append(Path(sys.executable).parent / "maskwatch")
    which = shutil.which("maskwatch")
    if which:
        candidates.append(Path(which).absolute())
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise InstallError(
        f"no `maskwatch` script found for {sys.executable}\n  fix: install the package into a virtual"
        " environment outside /home and /root (e.g. python3 -m venv /opt/maskwatch/venv &&"
        " /opt/maskwatch/venv/bin/pip install .), then run its bin/maskwatch install-service, or pass --exec PATH"
    )


def systemd_quote(word: str) -> str:
    """One word of an ExecStart= line: specifiers and variables escaped, quoted when needed."""
    word = word.replace("%", "%%").replace("$", "$$")
    if any(c.isspace() for c in word) or any(c in word for c in "\"'\\;"):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def render_unit(template: str, exec_path: str, config_path: str) -> str:
    """The unit text for this machine: ExecStart, Documentation and ConfigurationDirectory set."""
    exec_start = " ".join(systemd_quote(w) for w in (exec_path, "run", "--config", config_path))
    config_dir = PurePosixPath(config_path).parent
    out: List[str] = []
    seen_exec = False
    for line in template.splitlines():
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith(("#", ";")) else ""
        if key == "ExecStart":
            if seen_exec:
                continue  # one ExecStart for Type=notify
            seen_exec = True
            line = f"ExecStart={exec_start}"
        elif key == "Documentation":
            line = f"Documentation=file://{config_path}"
        elif key == "ConfigurationDirectory":
            # systemd takes a path relative to /etc; a config elsewhere needs no such directory.
            if config_dir.parent != PurePosixPath("/etc"):
                continue
            line = f"ConfigurationDirectory={config_dir.name}"
        out.append(line)
    if not seen_exec:
        raise InstallError("the unit template has no ExecStart= line\n  fix: use the repo's systemd/maskwatch.service")
    return "\n".join(out) + "\n"


def hidden_from_service(path: Path) -> Optional[str]:
    """Why the service could not reach ``path`` (or the interpreter of its ``#!`` line), or None."""
    targets = [path.absolute(), path.resolve()]
    try:
        with open(path, "rb") as f:
            first = f.readline(512)
        if first.startswith(b"#!"):
            interp = Path(first[2:].decode(errors="replace").split()[0])
            targets += [interp, interp.resolve()]
    except (OSError, IndexError):
        pass
    for t in targets:
        hidden = hidden_folder(str(t))
        if hidden:
            return f"{t} is under {hidden[0]}, which the unit hides ({hidden[1]})"
    return None


def hidden_folder(path: str) -> Optional[Tuple[str, str]]:
    """(folder, unit setting) when the service cannot see ``path`` (an absolute path), else None."""
    for top, setting in HIDDEN_FROM_SERVICE.items():
        if path == top or path.startswith(top + "/"):
            return top, setting
    return None


def model_files(models_src: Path) -> List[Path]:
    """The files of every model pair in a folder (sidecar + model file) and its notices.

    Raises InstallError when a pair is incomplete or a model does not match its sidecar's hash.
    """
    files: List[Path] = []
    for sidecar in sorted(models_src.glob("*.json")):
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict) or not str(meta.get("schema", "")).startswith("maskwatch-model/"):
            continue  # parity reports and other JSON
        model = sidecar.parent / str(meta.get("model_file", ""))
        if not model.is_file():
            raise InstallError(f"{sidecar}: its model_file {model.name!r} is missing\n  fix: rebuild the model"
                               " or remove the sidecar")
        want = meta.get("model_sha256")
        if want and sha256_of(model) != want:
            raise InstallError(f"{model}: does not match model_sha256 in {sidecar.name}\n  fix: rebuild the model"
                               " (the pair must come from the same conversion)")
        files += [sidecar, model]
    if not files:
        raise InstallError(f"{models_src}: no model sidecar (*.json with a maskwatch-model schema)\n  fix: build"
                           " the models first (see README) or pass --models DIR")
    files += [models_src / n for n in MODEL_EXTRAS if (models_src / n).is_file()]
    return files


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write via a temporary file and rename, so a running service never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)  # readable by the service's dynamic user, whatever the umask
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _under(root: Optional[Path], path: str) -> Path:
    """``path`` inside the staging root (or as is without one)."""
    return Path(path) if root is None else root / path.lstrip("/")


def verify_unit(path: Path) -> Optional[str]:
    """Problems ``systemd-analyze verify`` finds in a unit file; None when clean or not installed."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return None
    try:
        proc = subprocess.run([tool, "verify", str(path)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"systemd-analyze verify could not run: {exc}"
    text = (proc.stdout + proc.stderr).strip()
    return text or (f"systemd-analyze verify exited {proc.returncode}" if proc.returncode else None)


def install_service(
    unit_src: os.PathLike | str,
    unit_dir: str = "/etc/systemd/system",
    config_dir: str = "/etc/maskwatch",
    exec_path: Optional[os.PathLike | str] = None,
    config_template: Optional[os.PathLike | str] = None,
    models_src: Optional[os.PathLike | str] = None,
    prefix: Optional[os.PathLike | str] = None,
    dry_run: bool = False,
) -> InstallReport:
    """Install the unit, a default config (never over an existing one) and the models.

    ``unit_dir`` and ``config_dir`` are the final absolute paths the unit names; with ``prefix``
    the files are written under it instead (staging an image, tests). ``dry_run`` writes nothing
    and reports what would happen. Raises :class:`InstallError` on user-fixable problems.
    """
    unit_src = Path(unit_src)
    config_template = Path(config_template) if config_template else repo_root() / "config.yaml"
    models = Path(models_src) if models_src else repo_root() / "models"
    root = Path(prefix).absolute() if prefix else None
    for name, d in (("unit_dir", unit_dir), ("config_dir", config_dir)):
        if not os.path.isabs(d):
            raise InstallError(f"{name} {d!r} must be an absolute path\n  fix: give it starting with /")
    try:
        template = unit_src.read_text(encoding="utf-8")
    except OSError as exc:
        raise InstallError(f"{unit_src}: cannot read the unit ({exc.strerror})\n  fix: run from the maskwatch"
                           " checkout or pass --unit PATH") from None
    if not config_template.is_file():
        raise InstallError(f"{config_template}: no such config template\n  fix: pass --config-template PATH")
    exe = Path(exec_path).absolute() if exec_path else find_exec()
    config_path = str(PurePosixPath(config_dir) / "config.yaml")
    unit_path = str(PurePosixPath(unit_dir) / unit_src.name)
    unit_text = render_unit(template, str(exe), config_path)
    files = model_files(models)

    report = InstallReport(unit_path=unit_path, config_path=config_path,
                           exec_start=unit_text.split("ExecStart=", 1)[1].splitlines()[0], dry_run=dry_run)
    verb = "would write" if dry_run else "wrote"
    if not exe.is_file():
        report.warnings.append(f"{exe} does not exist on this machine (fine when staging an image with --prefix)")
    else:
        hidden = hidden_from_service(exe)
        if hidden:
            report.warnings.append(f"the service cannot start: {hidden}\n  fix: install maskwatch into a venv"
                                   " under /opt (e.g. /opt/maskwatch/venv, with a Python outside /root, /home and"
                                   " /tmp) and run its bin/maskwatch install-service")
    hidden_config = hidden_folder(config_path)
    if hidden_config:
        report.warnings.append(f"the service cannot read its config: {config_path} is under {hidden_config[0]},"
                               f" which the unit hides ({hidden_config[1]})\n  fix: keep the default --config-dir"
                               " /etc/maskwatch")
    staged = hidden_folder(str(root)) if root is not None else None
    if staged:
        report.warnings.append(f"staged under {root}: the unit names the final paths ({unit_path}, {config_path});"
                               f" left under {staged[0]} the files are invisible to the service ({staged[1]})\n"
                               "  fix: copy the staged tree to / on the target (or install without --prefix)")

    unit_dst = _under(root, unit_path)
    config_dst = _under(root, config_path)
    models_dst = _under(root, str(PurePosixPath(config_dir) / "models"))
    try:
        if not dry_run:
            _write_atomic(unit_dst, unit_text.encode())
            for d in (config_dst.parent, models_dst):
                d.mkdir(parents=True, exist_ok=True)
                os.chmod(d, 0o755)
        report.done.append(f"{verb} {unit_dst} (ExecStart={report.exec_start})")
        if config_dst.exists():
            report.done.append(f"kept {config_dst}: it exists and is never overwritten (compare it with"
                               f" {config_template} for new keys)")
        else:
            if not dry_run:
                _write_atomic(config_dst, config_template.read_bytes())
            report.config_written = True
            report.done.append(f"{verb} {config_dst} (default config from {config_template}; edit source.uri"
                               " and mqtt)")
        if not dry_run:
            for f in files:
                _write_atomic(models_dst / f.name, f.read_bytes())
        report.done.append(f"{'would copy' if dry_run else 'copied'} {len(files)} model file(s) to {models_dst}"
                           f" ({', '.join(f.name for f in files)})")
    except PermissionError as exc:
        raise InstallError(f"{exc.filename}: permission denied\n  fix: run it with sudo, or stage the files"
                           " with --prefix DIR") from None
    except OSError as exc:
        raise InstallError(f"{exc.filename}: cannot write ({exc.strerror})\n  fix: check the path and free"
                           " space") from None

    if shutil.which("systemd-analyze"):
        with tempfile.TemporaryDirectory(prefix="maskwatch-unit-") as tmp:
            probe = unit_dst if not dry_run else Path(tmp) / unit_src.name
            if dry_run:
                probe.write_text(unit_text, encoding="utf-8")
            problem = verify_unit(probe)
        if problem:
            report.warnings.append(f"systemd-analyze verify: {problem}")
        else:
            report.done.append("systemd-analyze verify: no problem found")

    service = unit_src.name
    report.next_steps = [
        f"maskwatch check-config {config_path}      # models load, keys valid",
        f"systemctl daemon-reload && systemctl enable --now {service.removesuffix('.service')}",
        f"journalctl -u {service.removesuffix('.service')} -f                  # its log",
    ]
    return report


def enable_now(service: str, run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> None:
    """``systemctl daemon-reload`` then ``systemctl enable --now SERVICE``; InstallError on failure."""
    for cmd in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", service]):
        try:
            proc = run(cmd, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InstallError(f"{' '.join(cmd)}: {exc}\n  fix: run it by hand") from None
        if proc.returncode != 0:
            raise InstallError(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout).strip()}\n  fix: see"
                               f" `systemctl status {service}` and `journalctl -u {service}`")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``install-service`` options (the CLI adds the subcommand and calls :func:`run`)."""
    p.add_argument("--prefix", metavar="DIR", help="write under DIR instead of / (staging an image); the unit still"
                   " names the final paths")
    p.add_argument("--dry-run", action="store_true", help="write nothing; print what would be done")
    p.add_argument("--enable", action="store_true", help="also run systemctl daemon-reload and enable --now")
    p.add_argument("--exec", dest="exec_path", metavar="PATH", help="maskwatch script for ExecStart (default: this"
                   " environment's)")
    p.add_argument("--unit", metavar="FILE", help="unit template (default: the checkout's systemd/maskwatch.service)")
    p.add_argument("--config-template", metavar="FILE", help="default config (default: the checkout's config.yaml)")
    p.add_argument("--models", metavar="DIR", help="models to install (default: the checkout's models/)")
    p.add_argument("--config-dir", default="/etc/maskwatch", metavar="DIR", help="where the config and models go")
    p.add_argument("--unit-dir", default="/etc/systemd/system", metavar="DIR", help="where the unit goes")


def run(args: argparse.Namespace, out=None, err=None) -> int:
    """Run ``install-service``; prints the report; exit 0, or 2 with one message on a user error."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if args.enable and (args.prefix or args.dry_run):
            raise InstallError("--enable acts on this machine's systemd\n  fix: drop --prefix / --dry-run, or"
                               " drop --enable")
        report = install_service(
            args.unit or repo_root() / "systemd" / "maskwatch.service",
            unit_dir=args.unit_dir, config_dir=args.config_dir, exec_path=args.exec_path,
            config_template=args.config_template, models_src=args.models, prefix=args.prefix,
            dry_run=args.dry_run,
        )
        for line in report.done:
            print(line, file=out)
        for w in report.warnings:
            print(f"warning: {w}", file=err)
        if args.enable:
            name = PurePosixPath(report.unit_path).name
            enable_now(name)
            print(f"enabled and started {name}; follow it with: journalctl -u {name} -f", file=out)
        else:
            print("next steps (as root):", file=out)
            for step in report.next_steps:
                print(f"  {step}", file=out)
    except InstallError as exc:
        print(f"maskwatch install-service: {exc}", file=err)
        return EXIT_USAGE
    return EXIT_OK


__all__ = ["InstallError", "InstallReport", "add_arguments", "enable_now", "find_exec",
           "hidden_folder", "hidden_from_service", "install_service", "model_files", "render_unit", "run", "systemd_quote", "verify_unit"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Standalone entry (``python -m agent.service.install``) until the CLI wires the subcommand."""
    p = argparse.ArgumentParser(prog="maskwatch install-service", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
