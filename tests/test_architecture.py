"""Layering rules: gin only at the edges, no train <-> evaluate cycle, one file per method."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pirl_ablate"
CORE = ("methods", "losses", "models", "transforms", "data", "evaluate")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_folders_never_import_gin():
    for folder in CORE:
        for path in (PACKAGE / folder).rglob("*.py"):
            assert not {m for m in imported_modules(path) if m.split(".")[0] == "gin"}, path


def test_importing_the_core_loads_no_gin():
    """Not even indirectly: every core package, with all it imports, leaves `gin` out of sys.modules."""
    code = ("import sys\n" + "".join(f"import pirl_ablate.{folder}\n" for folder in CORE)
            + "print(sorted(m for m in sys.modules if m == 'gin' or m.startswith('gin.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_core_registries_hold_the_classes_as_written():
    """What a registry hands out is the class itself, not a gin wrapper: building it takes no gin bindings."""
    import gin

    from pirl_ablate import config
    from pirl_ablate.methods import METHODS
    from pirl_ablate.methods.pirl import PIRL
    from pirl_ablate.transforms import TRANSFORMS
    from pirl_ablate.transforms.jigsaw import Jigsaw

    config.parse([], ["jigsaw.hue = 0.1"])
    assert METHODS.get("pirl") is PIRL and TRANSFORMS.get("jigsaw") is Jigsaw
    assert Jigsaw().colour["hue"] == 0.2  # the class as written: its own default
    from pirl_ablate.gin_edge import configured

    assert configured("jigsaw")().colour["hue"] == 0.1  # the edge's wrapper: the binding
    gin.clear_config()


def test_only_config_reads_gins_private_registry():
    readers = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
               if "_REGISTRY" in p.read_text(encoding="utf-8")]
    assert readers == ["config.py"]


def test_evaluation_does_not_import_training():
    code = "import sys, pirl_ablate.evaluate, pirl_ablate.checkpoint; print('pirl_ablate.train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_method_is_one_registered_file():
    from pirl_ablate.methods import METHODS

    files = {p.stem for p in (PACKAGE / "methods").glob("*.py")} - {"__init__", "base"}
    # file -> the method registered in it (other tests register more methods of their own, outside the package)
    built_in = {"pirl": "pirl", "npid": "npid", "jigsaw": "jigsaw", "rotation": "rotation",
                "supervised": "supervised", "moco": "moco_v2", "imported": "imported"}
    assert files == set(built_in)
    for file, name in built_in.items():
        assert METHODS.get(name).__module__ == f"pirl_ablate.methods.{file}"
    packaged = [e.name for e in METHODS.describe() if e.obj.__module__.startswith("pirl_ablate.methods.")]
    assert sorted(packaged) == sorted(built_in.values())  # one registered method per file


def test_a_configurable_subclass_takes_its_own_bindings_only():
    """MoCo v2's view subclasses the image view: at the paper scale it keeps MoCo v2's recipe (no random photometric
    step, MoCo v2's main_moco.py) while PIRL's image view takes VISSL's p = 0.66 (gin/scale/paper.gin)."""
    import gin

    from pirl_ablate import config
    from pirl_ablate.build import configured_transform

    config.parse(["paper/moco_v2.gin"])
    assert configured_transform("image").random_photometric_p == 0.66
    view = configured_transform("moco_v2")
    assert (view.random_photometric_p, view.size, view.blur_sigma) == (0.0, 224, (0.1, 2.0))
    gin.clear_config()
