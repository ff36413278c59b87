"""The one gin loading helper: files + `--bind` overrides, include search paths, one-line errors.

gin resolves `include 'x.gin'` against its global search paths only (by default the current directory). Here an
include is looked up, in order, in the including file's folder, the repository's `gin/` folder (plus any folders
in `PIRL_ABLATE_GIN_PATH`) and the current directory. Each file is read once per config: a file included again
(e.g. `scale/smoke.gin` through a sweep file and again through a variant's `random_init.gin`) is skipped, so it
cannot undo the bindings made after its first inclusion. Every module that registers configurables is imported
before the config is parsed and locked, so nothing registers after the lock.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import math
import os
import re
import sys
import tokenize
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gin
from gin import config_parser

from pirl_ablate.console import console
from pirl_ablate.errors import ConfigError, did_you_mean
from pirl_ablate.registry import signature_parameters

GIN_DIR = Path(__file__).resolve().parent.parent / "gin"

# Modules whose import registers gin configurables: the gin edge (the core's registries and configurables), the
# training builder, the sweep file's settings.
CONFIGURABLE_MODULES = (
    "pirl_ablate.gin_edge",
    "pirl_ablate.build",
    "pirl_ablate.sweep",
)

# Configurables renamed since runs were first recorded: {old gin name: current}. A gin file, `--bind` or recorded
# config.gin that binds an old name loads under the current one, with one warning line per old name and process;
# recorded configs read back (`bindings_of`) under the current names; sweep run ids hash the old names
# (`first_key`), so a sweep folder recorded before the rename resumes where it stopped.
RENAMED = {"PIRLLoss": "PIRL", "NPIDLoss": "NPID", "JigsawLoss": "JigsawMethod", "RotationLoss": "RotationMethod",
           "SupervisedLoss": "Supervised", "PIRLNet": "heads"}
_FIRST_NAMES = {new: old for old, new in RENAMED.items()}
_OLD_NAME = re.compile(r"(?<![\w.])(?P<name>" + "|".join(RENAMED) + r")(?=\.\w)")
_CURRENT_NAME = re.compile(r"(?<![\w.])(?P<name>" + "|".join(_FIRST_NAMES) + r")(?=\.\w)")
_warned: set[str] = set()
# a gin `include 'path'` statement at the start of a line (the file scan) or as a whole line (`fullmatch`, a sweep
# variant's lines)
INCLUDE = re.compile(r"""^[ \t]*include\s+(['"])(?P<path>.+?)\1""", re.MULTILINE)
_LOCATION = re.compile(r'In (?:file "(?P<file>[^"]+)", line (?P<line>\d+)|bindings string line (?P<bline>\d+))')
_NO_PARAM = re.compile(r"Configurable '(?P<cfg>[^']+)' doesn't have a parameter named '(?P<param>[^']+)'")
_NO_CONFIGURABLE = re.compile(r"No configurable matching '(?P<name>[^']+)'")
_DYNAMIC = re.compile(r"^[ \t]*from\s+__gin__\s+import\s+dynamic_registration\b", re.MULTILINE)
_IN_CALL = re.compile(r"In call to configurable '(?P<name>[^']+)'")
# what gin's parser raises on bad text (tokenize.TokenError: an unclosed bracket or quote)
GIN_ERRORS = (ValueError, SyntaxError, OSError, TypeError, KeyError, ImportError, tokenize.TokenError)


def current_names(text: str) -> str:
    """gin `text` with every renamed configurable (`RENAMED`) under its current name (`PIRLLoss.tau` ->
    `PIRL.tau`); the first use of each old name in this process prints one warning line."""

    def rename(m: re.Match) -> str:
        old = m.group("name")
        if old not in _warned:
            _warned.add(old)
            console.print(f"[yellow]warning:[/] `{old}` is now `{RENAMED[old]}` (`{old}.*` bindings still apply; "
                          f"write `{RENAMED[old]}.*`)", markup=True, soft_wrap=True)
        return RENAMED[old]

    return _OLD_NAME.sub(rename, text)


def current_key(key: str) -> str:
    """A binding key (`scope/Configurable.param`) under the configurable's current name (`RENAMED`)."""
    return _OLD_NAME.sub(lambda m: RENAMED[m.group("name")], key)


def first_key(key: str) -> str:
    """A binding key under the configurable's first name (`RENAMED` backwards): what sweep run ids hash."""
    return _CURRENT_NAME.sub(lambda m: _FIRST_NAMES[m.group("name")], key)


def gin_search_dirs() -> list[Path]:
    """The shared config folders: the repository's gin/ and PIRL_ABLATE_GIN_PATH entries."""
    extra = [Path(p) for p in os.environ.get("PIRL_ABLATE_GIN_PATH", "").split(os.pathsep) if p]
    return [GIN_DIR, *extra]


def import_configurables() -> None:
    """Import every module of the package that registers gin configurables."""
    for name in CONFIGURABLE_MODULES:
        importlib.import_module(name)


def resolve_config_file(path: str | os.PathLike, base: Path | Sequence[Path] | None = None) -> Path:
    """The file a user or an include names, looked up in `base` (the including file's folder, then the folders
    of the files that included it), gin/ and the current directory; a file named on the command line also in the
    repository (so the shipped `sweeps/lambda.gin` is found from any folder)."""
    p = Path(path)
    if p.is_absolute():
        if p.is_file():
            return p
        raise ConfigError(f"{p}: no such gin file")
    bases = [base] if isinstance(base, Path) else list(base or [])
    candidates = [*(d / p for d in bases), *(d / p for d in gin_search_dirs()), Path.cwd() / p]
    if base is None:  # a file named on the command line: the current directory first, the repository last
        candidates = [Path.cwd() / p, *candidates, GIN_DIR.parent / p]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    where = ", ".join(sorted({str(c.parent) for c in candidates}))
    raise ConfigError(f"{path}: no such gin file (looked in {where})")


def _include_dirs(files: Sequence[Path]) -> list[Path]:
    """Folders of every file reachable through includes, in discovery order (the including file's first)."""
    dirs: list[Path] = []
    seen: set[Path] = set()
    stack: list[tuple[Path, tuple[Path, ...]]] = [(f, ()) for f in reversed(files)]
    while stack:
        f, parents = stack.pop()
        if f in seen:
            continue
        seen.add(f)
        if f.parent not in dirs:
            dirs.append(f.parent)
        chain = (f.parent, *parents)
        text = read_gin_text(f)
        for m in INCLUDE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            try:
                stack.append((resolve_config_file(m.group("path"), base=chain), chain))
            except ConfigError as e:
                raise ConfigError(f"{f}:{line}: include {m.group('path')!r}: {str(e).split(': ', 1)[1]}") from None
    return dirs


def read_gin_text(path: Path) -> str:
    """The text of gin file `path`; ConfigError naming it if it is not UTF-8 or uses gin's dynamic registration
    (`from __gin__ import dynamic_registration` binds by module path: pirl-ablate's configs bind registered names,
    e.g. `PIRL.tau`, and record them that way)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {e.object[e.start]:#04x}); save the file as UTF-8"
                          ) from None
    if m := _DYNAMIC.search(text):
        raise ConfigError(f"{path}:{text.count(chr(10), 0, m.start()) + 1}: `from __gin__ import "
                          "dynamic_registration` is not supported; bind configurables by their registered names "
                          "(e.g. PIRL.tau = 0.1) and remove the line")
    return text


@contextlib.contextmanager
def _includes_resolved_once() -> Iterator[None]:
    """gin's file parser wrapped for the duration: an include is resolved as `resolve_config_file` does (the
    including file's folder, then the folders of the files that included it, gin/, the current directory; gin
    itself would search one global list of folders), a file already parsed is skipped and renamed configurables
    take their current names (`current_names`)."""
    original = gin.config.parse_config_file
    seen: set[Path] = set()
    chain: list[Path] = []  # folders of the files being parsed, innermost last

    def parse_once(config_file: str, skip_unknown: bool | Sequence[str] = False,
                   print_includes_and_imports: bool = False) -> Any:
        path = resolve_config_file(config_file, base=list(reversed(chain)) if chain else None)
        if path in seen:
            return gin.config.ParsedConfigFileIncludesAndImports(filename=config_file, imports=[], includes=[])
        seen.add(path)
        chain.append(path.parent)
        text = io.StringIO(current_names(read_gin_text(path)))
        text.name = str(path)  # gin's errors name the file and line
        try:
            includes, imports = gin.parse_config(text, skip_unknown=skip_unknown)
        finally:
            chain.pop()
        return gin.config.ParsedConfigFileIncludesAndImports(filename=config_file, imports=imports, includes=includes)

    gin.config.parse_config_file = parse_once
    try:
        yield
    finally:
        gin.config.parse_config_file = original


def parse(files: Sequence[str | os.PathLike] = (), bindings: Sequence[str] = (), *,
          finalize: bool = True) -> str:
    """Clear gin, import the configurables, parse `files` then `bindings`; return `gin.config_str()`.

    Every file is parsed once: a later include of a file already parsed is skipped.

    Raises ConfigError with a one-line message (file:line, the bad name, close matches) on any gin error.
    """
    paths = [resolve_config_file(f) for f in files]
    gin.clear_config()
    import_configurables()
    dirs = _include_dirs(paths)
    _add_import_paths([Path.cwd(), *dirs])
    with _includes_resolved_once():
        try:
            gin.parse_config_files_and_bindings([str(p) for p in paths], [current_names(b) for b in bindings],
                                                finalize_config=False)
        except GIN_ERRORS as e:
            gin.clear_config()
            raise ConfigError(format_gin_error(e, bindings)) from None
    text = gin.config_str()
    try:
        check_ranges(text)
    except ConfigError:
        gin.clear_config()
        raise
    if finalize:
        gin.finalize()
    return text


def _positive(v: float) -> bool:
    return math.isfinite(v) and v > 0


def _whole_positive(v: float) -> bool:
    return isinstance(v, int) and v >= 1


# The range of a numeric hyperparameter, by parameter name, whatever configurable it belongs to (a method, a
# negative source, a transform, an evaluation protocol): a value outside it would train or evaluate silently wrong
# (PIRL.tau = -0.1) or die far from its cause (tau = 0: a NaN loss). Values that are not numbers (None, a
# reference) are left to the configurable.
RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    **dict.fromkeys(("tau", "sigma", "monitor_sigma", "lr", "base_lr", "head_lr"), ("> 0", _positive)),
    "lambda_": ("in [0, 1] (paper Eq. 5)", lambda v: 0 <= v <= 1),
    "weight_decay": (">= 0", lambda v: math.isfinite(v) and v >= 0),
    **dict.fromkeys(("embed_dim", "num_negatives", "num_patches", "queue_size", "k", "monitor_k", "grid",
                     "num_permutations", "image_size", "batch_size", "base_batch"),
                    ("a whole number >= 1", _whole_positive)),
}
MOMENTUM = ("in [0, 1) (an exponential moving average's weight of its past)", lambda v: 0 <= v < 1)


def check_ranges(text: str) -> None:
    """ConfigError `key = value: must be ...` for the first binding of gin `text` outside its range (`RANGES`;
    any parameter named *momentum: [0, 1))."""
    for key, value in bindings_of(text).items():
        param = key.rsplit(".", 1)[-1]
        rule = MOMENTUM if param.endswith("momentum") else RANGES.get(param)
        if rule is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not rule[1](value):
            raise ConfigError(f"{key} = {value!r}: must be {rule[0]}")


def parse_text(config: str, *, finalize: bool = True) -> None:
    """Re-create a config from `gin.config_str()` text, e.g. inside a sweep worker process (renamed configurables
    take their current names)."""
    gin.clear_config()
    import_configurables()
    try:
        gin.parse_config(current_names(config))
    except GIN_ERRORS as e:
        gin.clear_config()
        raise ConfigError(format_gin_error(e, ())) from None
    if finalize:
        gin.finalize()


def _add_import_paths(dirs: Sequence[Path]) -> None:
    """Let `import my_module` in a gin file find modules beside the gin files or in the current directory.

    The folders go on sys.path and on PYTHONPATH, so sweep workers (local processes, SLURM jobs) that re-parse the
    config import the same modules.
    """
    python_path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    for d in map(str, dirs):
        if d not in sys.path:
            sys.path.append(d)
        if d not in python_path:
            python_path.append(d)
    os.environ["PYTHONPATH"] = os.pathsep.join(python_path)


def format_gin_error(e: BaseException, bindings: Sequence[str] = ()) -> str:
    """One line: `file:line: what was wrong (did you mean ...?)`."""
    msg = str(e)
    first = msg.strip().splitlines()[0] if msg.strip() else type(e).__name__
    where = ""
    if isinstance(e, SyntaxError):
        if e.filename:
            where = f"{e.filename}:{e.lineno}"
        elif e.lineno and bindings:
            lines = "\n".join(bindings).splitlines()
            where = f"--bind {lines[e.lineno - 1].strip()!r}" if e.lineno <= len(lines) else "--bind"
        first = re.sub(r"\.?\s*\([^()]*line \d+\)$", "", first)
    loc = _LOCATION.search(msg)
    if loc and loc.group("file"):
        where = f"{loc.group('file')}:{loc.group('line')}"
    elif loc and loc.group("bline"):
        lines = "\n".join(bindings).splitlines()
        i = int(loc.group("bline")) - 1
        where = f"--bind {lines[i].strip()!r}" if 0 <= i < len(lines) else "--bind"
    hint = ""
    if isinstance(e, tokenize.TokenError):
        bad = next((b for b in bindings if _unclosed(b)), None)
        where = f"--bind {bad.strip()!r}" if bad else where
        first = f"unclosed bracket or quote ({e.args[0]})"
    elif isinstance(e, ImportError):
        m = re.search(r"No module named '([^']+)'", msg)
        name = m.group(1) if m else first
        first = f"cannot import `{name}` (put the folder that holds it on PYTHONPATH)"
    elif m := _NO_PARAM.search(msg):
        hint = did_you_mean(m.group("param"), configurable_parameters(m.group("cfg")) or {})
        first = f"`{m.group('cfg')}` has no parameter `{m.group('param')}`"
    elif m := _NO_CONFIGURABLE.search(msg):
        hint = did_you_mean(m.group("name"), configurable_names())
        first = f"unknown configurable `{m.group('name')}`"
    first = first.rstrip(".")
    return f"{where}: {first}{hint}" if where else f"{first}{hint}"


def configurable_names() -> set[str]:
    """The short names of every registered gin configurable."""
    return {selector.rsplit(".", 1)[-1] for selector, _ in gin.config._REGISTRY.items()}


def _unclosed(text: str) -> bool:
    """Whether `text` leaves a bracket or a triple-quoted string open (tokenize cannot finish it)."""
    try:
        list(tokenize.generate_tokens(io.StringIO(text).readline))
    except tokenize.TokenError:
        return True
    return False


def configurable_error(e: BaseException) -> str | None:
    """One line for a TypeError/ValueError raised inside a configurable gin called (a binding of the wrong type,
    e.g. `PIRL.lambda_ = 'abc'`): the configurable, the error, and its bindings that could be the cause (those
    whose type the message names, else all of them). None if gin did not call a configurable."""
    m = _IN_CALL.search(str(e))
    if not isinstance(e, (TypeError, ValueError)) or m is None:
        return None
    name = m.group("name").rsplit(".", 1)[-1]
    first = str(e).strip().splitlines()[0]
    own = {k: v for k, v in bindings_of(gin.config_str()).items() if k.rsplit(".", 1)[0].rsplit(".", 1)[-1] == name}
    named = {k: v for k, v in own.items() if f"'{type(v).__name__}'" in first} or own
    given = "; ".join(f"{k} = {v!r}" for k, v in named.items())
    return f"{name}: {type(e).__name__}: {first}" + (f" (bound: {given}: is each the right type?)" if given else "")


def configurable_target(name: str) -> Callable | None:
    """The function or class registered with gin as `name` (None if none is), as written (not gin's wrapper).

    This and `configurable_names` are the only code that reads gin's registry (a private API)."""
    try:
        cfg = gin.config._REGISTRY.get_match(name)
    except (KeyError, ValueError):
        return None
    return None if cfg is None else cfg.wrapped


def bound_kwargs(name: str, scope: str | None = None) -> dict[str, Any]:
    """The keyword arguments the current config binds for configurable `name` (inside gin scope `scope`)."""
    with gin.config_scope(scope) if scope else contextlib.nullcontext():
        return dict(gin.get_bindings(name))


def bindings_of(text: str) -> dict[str, Any]:
    """{"scope/Configurable.param": value} of every binding in gin `text` (a later binding wins; a renamed
    configurable under its current name, `RENAMED`); references and macros are their text."""
    out: dict[str, str] = {}
    for statement in config_parser.ConfigParser(text, _Literal()):
        if isinstance(statement, config_parser.BindingStatement):
            key = f"{statement.scope + '/' if statement.scope else ''}{statement.selector}.{statement.arg_name}"
            out[current_key(key)] = statement.value
    return out


class _Literal(config_parser.ParserDelegate):
    """Parses references and macros as their text (`@name`, `%name`), so no configurable needs to be known."""

    def configurable_reference(self, scoped_selector: str, evaluate: bool) -> Any:
        return _Text(f"@{scoped_selector}{'()' if evaluate else ''}")

    def macro(self, name: str) -> Any:
        return _Text(f"%{name}")


class _Text(str):
    def __repr__(self) -> str:
        return str(self)


def configurable_parameters(name: str) -> dict[str, inspect.Parameter] | None:
    """The parameters of gin configurable `name` (None if it is unknown or has no signature)."""
    fn = configurable_target(name)
    return None if fn is None else signature_parameters(fn)
