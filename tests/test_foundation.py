"""The foundation: gin loading helper, atomic run-folder writer, CLI contract."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gin
import pytest
from sweep_jobs import PATIENCE_S

from pirl_ablate import config, gin_edge
from pirl_ablate.errors import ConfigError, UnknownNameError
from pirl_ablate.registry import Registry
from pirl_ablate.runs import RunDir, atomic_write, atomic_write_json, read_json, read_jsonl

# A registry and a configurable of our own, so these tests do not depend on the built-in components.
_REG = Registry("widget")


@_REG.register("foundation_widget", gin_name="FoundationWidget")
class FoundationWidget:
    """A configurable used only by these tests."""

    def __init__(self, lambda_: float = 0.5, size: int = 3):
        self.lambda_ = lambda_
        self.size = size


gin_edge.expose(_REG)
Widget = gin_edge.configured("FoundationWidget")  # the class with its gin bindings filling its arguments


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------- gin helper
def test_include_resolves_against_including_folder_from_another_cwd(tmp_path, monkeypatch):
    _write(tmp_path / "configs" / "base.gin", "FoundationWidget.lambda_ = 0.25\nFoundationWidget.size = 7\n")
    _write(tmp_path / "configs" / "nested" / "child.gin", "include 'base.gin'\nFoundationWidget.size = 9\n")
    top = _write(tmp_path / "configs" / "top.gin", "include 'nested/child.gin'\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # gin alone would only search here
    config.parse([top])
    w = Widget()
    assert (w.lambda_, w.size) == (0.25, 9)  # later binding wins


def test_nested_include_prefers_the_including_files_folder_to_the_top_files(tmp_path):
    # the paper twins' layout: top/npid.gin and top/lib/npid.gin both exist; lib/child.gin means its neighbour
    _write(tmp_path / "top" / "npid.gin", "FoundationWidget.size = 1\n")
    _write(tmp_path / "top" / "lib" / "npid.gin", "FoundationWidget.size = 2\n")
    _write(tmp_path / "top" / "lib" / "child.gin", "include 'npid.gin'\n")
    config.parse([_write(tmp_path / "top" / "run.gin", "include 'lib/child.gin'\n")])
    assert Widget().size == 2


def test_a_file_included_again_is_skipped_so_later_bindings_stand(tmp_path):
    _write(tmp_path / "scale.gin", "FoundationWidget.size = 1\nFoundationWidget.lambda_ = 0.1\n")
    _write(tmp_path / "method.gin", "include 'scale.gin'\nFoundationWidget.lambda_ = 0.9\n")
    top = _write(tmp_path / "sweep.gin", "include 'scale.gin'\nFoundationWidget.size = 5\ninclude 'method.gin'\n")
    config.parse([top, tmp_path / "scale.gin"])  # named again on the command line: skipped too
    w = Widget()
    assert (w.size, w.lambda_) == (5, 0.9)


def test_include_resolves_against_repository_gin_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PIRL_ABLATE_GIN_PATH", str(tmp_path / "shared"))
    _write(tmp_path / "shared" / "preset.gin", "FoundationWidget.size = 11\n")
    top = _write(tmp_path / "mine" / "run.gin", "include 'preset.gin'\n")
    config.parse([top])
    assert Widget().size == 11


def test_bindings_override_files_and_config_is_locked(tmp_path):
    f = _write(tmp_path / "a.gin", "FoundationWidget.lambda_ = 0.25\n")
    text = config.parse([f], ["FoundationWidget.lambda_ = 0.75"])
    assert Widget().lambda_ == 0.75
    assert "FoundationWidget.lambda_ = 0.75" in text
    with pytest.raises(RuntimeError, match="locked"):
        gin.bind_parameter("FoundationWidget.size", 1)


def test_parse_text_recreates_config_in_a_fresh_state(tmp_path):
    text = config.parse([], ["FoundationWidget.size = 5"])
    gin.clear_config()
    assert Widget().size == 3
    config.parse_text(text)
    assert Widget().size == 5


def test_typo_in_binding_names_file_line_and_suggestion(tmp_path):
    f = _write(tmp_path / "typo.gin", "# a comment\n\nFoundationWidget.lamda = 0.5\n")
    with pytest.raises(ConfigError) as e:
        config.parse([f])
    msg = str(e.value)
    assert msg == f"{f}:3: `FoundationWidget` has no parameter `lamda` (did you mean `lambda_`?)"


def test_unknown_configurable_and_bad_bind_and_missing_include(tmp_path):
    f = _write(tmp_path / "x.gin", "FoundationWidgt.size = 1\n")
    with pytest.raises(ConfigError, match=r"x\.gin:1: unknown configurable `FoundationWidgt` "
                                          r"\(did you mean `FoundationWidget`\?\)"):
        config.parse([f])
    with pytest.raises(ConfigError, match=r"--bind 'FoundationWidget.siz = 2'.*did you mean `size`"):
        config.parse([], ["FoundationWidget.siz = 2"])
    g = _write(tmp_path / "inc.gin", "\ninclude 'nowhere.gin'\n")
    with pytest.raises(ConfigError, match=r"inc\.gin:2: include 'nowhere\.gin': no such gin file"):
        config.parse([g])
    with pytest.raises(ConfigError, match=r"^missing\.gin: no such gin file"):
        config.parse(["missing.gin"])


def test_registry_errors():
    with pytest.raises(ValueError, match="already registered"):
        _REG.register("foundation_widget", gin_name="Other")(type("Other", (), {}))
    with pytest.raises(UnknownNameError, match="did you mean `foundation_widget`"):
        _REG.get("foundation_widgt")
    entry = _REG.entry("foundation_widget")
    assert entry.doc == "A configurable used only by these tests."
    assert entry.params == {"lambda_": 0.5, "size": 3}


# ---------------------------------------------------------------------------------------------- atomic writer
def _slow_writer(path: str, started) -> None:
    def write(fh):
        fh.write(b'{"half": ')
        fh.flush()
        started.set()
        time.sleep(60)
        fh.write(b"1}")

    atomic_write(path, write)


def test_killed_write_leaves_previous_file_intact(tmp_path):
    target = tmp_path / "result.json"
    atomic_write_json(target, {"value": 1})
    ctx = mp.get_context("fork")
    started = ctx.Event()
    proc = ctx.Process(target=_slow_writer, args=(str(target), started))
    proc.start()
    assert started.wait(30)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert read_json(target) == {"value": 1}


def test_failed_write_leaves_previous_file_and_no_temporaries(tmp_path):
    target = tmp_path / "x.json"
    atomic_write_json(target, {"a": 1})

    def broken(fh):
        fh.write(b"{")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert read_json(target) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_run_dir_lifecycle(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.status() == "pending"
    meta = run.start("FoundationWidget.size = 3\n", seed=7, bindings={"FoundationWidget.size": 3})
    assert run.status() == "running"
    assert meta["seed"] == 7 and meta["restarts"] == 0 and meta["end"] is None
    assert set(meta["versions"]) >= {"python", "torch", "gin-config"}
    assert run.config_path.read_text() == "FoundationWidget.size = 3\n"
    run.log_metrics({"epoch": 0, "loss": 1.5})
    with open(run.metrics_path, "a") as fh:  # a writer killed mid-line
        fh.write('{"epoch": 1, "lo')
    assert read_jsonl(run.metrics_path) == [{"epoch": 0, "loss": 1.5}]
    again = run.start("x", seed=7)
    assert again["restarts"] == 1 and again["start"] == meta["start"]
    run.fail("loss is nan at step 12", step=12)
    assert run.status() == "failed" and run.result()["reason"] == "loss is nan at step 12"
    assert run.meta()["end"] is not None


# ------------------------------------------------------------------------------------------------------- CLI
def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pirl_ablate.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=PATIENCE_S)


def test_cli_help_lists_every_subcommand():
    r = _cli("--help")
    assert r.returncode == 0
    for cmd in ("train", "sweep", "status", "report", "eval", "export", "import", "show-transform", "list"):
        assert cmd in r.stdout
    assert _cli("--version").stdout.strip() == "pirl-ablate 0.1.0"


def test_cli_missing_config_is_one_line_nonzero(tmp_path):
    r = _cli("train", "missing.gin", cwd=tmp_path)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "missing.gin" in lines[0] and "Traceback" not in r.stderr


def test_cli_typo_binding_names_file_line_and_suggestion(tmp_path):
    f = _write(tmp_path / "typo.gin", "include 'pirl_jigsaw.gin'\nPIRL.lamda = 0.5\n")
    r = _cli("train", str(f), "--out", str(tmp_path / "run"))
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert f"{f}:2" in lines[0] and "lamda" in lines[0] and "lambda_" in lines[0]
    assert not (tmp_path / "run" / "result.json").exists()


def test_cli_list_shows_registered_entries():
    r = _cli("list", "methods")
    assert r.returncode == 0, r.stderr
    assert "pirl" in r.stdout and "npid" in r.stdout and "PIRL" in r.stdout


def test_gin_import_finds_modules_beside_the_gin_file_and_names_missing_ones(tmp_path, monkeypatch):
    _write(tmp_path / "cfg" / "beside_gin_module.py",
           "import gin\n\n@gin.configurable\ndef beside_gin_fn(x=1):\n    return x\n")
    f = _write(tmp_path / "cfg" / "uses.gin", "import beside_gin_module\nbeside_gin_fn.x = 4\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    config.parse([f])
    import beside_gin_module

    assert beside_gin_module.beside_gin_fn() == 4
    assert str(tmp_path / "cfg") in os.environ["PYTHONPATH"].split(os.pathsep)  # sweep workers inherit it
    g = _write(tmp_path / "bad.gin", "\nimport no_such_module_xyz\n")
    with pytest.raises(ConfigError, match=r"bad\.gin:2: cannot import `no_such_module_xyz`"):
        config.parse([g])
