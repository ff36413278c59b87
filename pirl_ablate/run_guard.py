"""What a training entry point checks before it writes into a run folder, and the values it refuses.

`guarded_run(run, config_str)` wraps the whole of a run's training (pirl_ablate.build.run_training):

- the run folder is locked (pirl_ablate.locks): a second process training into it is refused, naming the holder;
- temporary files that killed writers left behind are removed;
- a run folder with a checkpoint is resumed only under the config it was started with (its config.gin): any
  binding the new config gives a different value, and any binding the run was given that the new config drops, is
  listed in the refusal. `train.epochs` alone may grow; a run
  that had finished then trains on (its result.json is retired to result.previous.json).

`check_train_values` refuses epochs and batch sizes that would otherwise train silently wrong or crash.
"""

from __future__ import annotations

import contextlib
import tokenize
from collections.abc import Iterator
from typing import Any

from pirl_ablate.config import bindings_of
from pirl_ablate.errors import ConfigError, UserError
from pirl_ablate.locks import folder_lock
from pirl_ablate.runs import STATUS_DONE, RunDir, remove_orphan_temporaries

GROWABLE = "train.epochs"
SWEEP_MACHINERY = ("sweep", "local", "slurm")  # configurables of how a sweep runs, not of what a run trains
# config.gin of a finished run: the operative config, then this line, then every binding as given
GIVEN_MARKER = "\n# All bindings as given\n"


@contextlib.contextmanager
def guarded_run(run: RunDir, config_str: str, *, owner: bool = True) -> Iterator[None]:
    """Hold the run folder for the block; refuse a resume under another config (see the module docstring).

    owner: this process writes the folder (rank 0 of a DDP launch); the other ranks check nothing here.
    """
    if run.path.exists() and not run.path.is_dir():
        raise UserError(f"--out {run.path}: is a file, not a folder; give a folder for the run")
    if not owner:
        yield
        return
    with folder_lock(run.path, "run"):
        remove_orphan_temporaries(run.path)
        check_resume_config(run, config_str)
        yield


def check_resume_config(run: RunDir, config_str: str) -> None:
    """Refuse (ConfigError listing the keys) to resume `run` under bindings that differ from its config.gin; allow a
    larger `train.epochs`, retiring a finished run's result.json so that it trains on."""
    from pirl_ablate import checkpoint

    last = checkpoint.last(run.checkpoint_dir)
    if last is None or not run.config_path.is_file():
        return  # nothing trained yet: any config may start it
    changes, before, after = config_changes(run, config_str)
    if changes:
        raise ConfigError(f"{run.config_path}: this run folder was trained under another config ({changes}); "
                          f"resume it with its own bindings, or train into another --out (only {GROWABLE} may grow)")
    if GROWABLE not in after or after[GROWABLE] == before.get(GROWABLE):
        return
    trained = checkpoint.load(last)["epoch"]
    if isinstance(after[GROWABLE], int) and after[GROWABLE] < trained:
        raise ConfigError(f"{GROWABLE} = {after[GROWABLE]}: {run.path} has trained {trained} epochs already; a run "
                          "folder can be extended, not shortened (train into another --out)")
    result = run.result()
    if result is not None and result.get("status") == STATUS_DONE:
        run.retire_result()


def config_changes(run: RunDir, config_str: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """How `config_str` differs from the config.gin `run` was trained under, as 'key: before -> after; ...' ('' when
    only `train.epochs` differs or nothing does): any binding given a different value, any binding the run did not
    have, and any binding the run was given that `config_str` drops (its default would apply); the sweep's own
    settings (`sweep.*`, `local.*`, `slurm.*`: a new grid value, another parallelism) are not compared. Also
    returns both configs' bindings. A config.gin that is not UTF-8 or not gin raises ConfigError naming it."""
    try:
        text = run.config_path.read_text(encoding="utf-8")
        before = bindings_of(text)  # operative values (defaults included) and the bindings as given
        given = bindings_of(text.split(GIVEN_MARKER)[-1])  # config.gin as first written is the as-given text alone
    except (ValueError, SyntaxError, tokenize.TokenError) as e:  # UnicodeDecodeError is a ValueError
        raise ConfigError(f"{run.config_path}: unreadable ({type(e).__name__}: {str(e).splitlines()[0]}); this run "
                          "folder's config is lost: delete the folder or train into another --out") from None
    after = bindings_of(config_str)

    def recipe(key: str) -> bool:
        return key != GROWABLE and key.rsplit(".", 1)[0].rsplit("/", 1)[-1] not in SWEEP_MACHINERY

    differ = sorted(k for k in after if k in before and before[k] != after[k] and recipe(k))
    differ += sorted(k for k in after if k not in before and recipe(k))
    differ += sorted(k for k in given if k not in after and recipe(k))

    def value(bindings: dict[str, Any], key: str) -> str:
        return repr(bindings[key]) if key in bindings else "(unbound)"

    return "; ".join(f"{k}: {value(before, k)} -> {value(after, k)}" for k in differ), before, after


def check_train_values(*, epochs: Any, batch_size: Any) -> None:
    """train.epochs a whole number >= 0 and train.batch_size a whole number >= 1 (ConfigError otherwise)."""
    if not _whole(epochs) or epochs < 0:
        raise ConfigError(f"train.epochs = {epochs!r}: must be a whole number >= 0 (0 saves the initial network)")
    if not _whole(batch_size) or batch_size < 1:
        raise ConfigError(f"train.batch_size = {batch_size!r}: must be a whole number >= 1 (images per step over "
                          "all processes)")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


__all__ = ["check_resume_config", "config_changes", "check_train_values", "guarded_run"]
