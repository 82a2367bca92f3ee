"""Where one setting travels: the modules a ``TrainConfig`` passes through in ``tlzoo train --strategy fine-tune``.

Runs a small fine-tune in this process with :func:`sys.setprofile` on, and records every call of a tlzoo
function that receives the run's ``TrainConfig`` (as an argument, or as ``self``). It prints the modules in
first-visit order and the returns: a step of the path into a module it had already left for another one (the
back-and-forth issue 36 measured: 15 returns, to ``training/config.py``, ``training/data_prep.py`` and
``tlzoo/data.py``).

    python benchmarks/config_trace.py            # a table
    python benchmarks/config_trace.py --json     # the same as JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def trace(folder: Path, out: Path) -> list[str]:
    """The module of each call that received the run's config, in call order (consecutive repeats merged)."""
    import tlzoo
    from tlzoo.training.config import TrainConfig

    path: list[str] = []
    calls: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        if not module.startswith("tlzoo"):
            return
        code = frame.f_code
        names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        if any(isinstance(frame.f_locals.get(name), TrainConfig) for name in names):
            calls.append(f"{module}:{code.co_name}")
            if not path or path[-1] != module:
                path.append(module)

    sys.setprofile(profile)
    try:
        tlzoo.train(backbone="mobilenet_v2", weights="none", strategy="fine-tune", data=str(folder), epochs=1,
                    image_size=32, out_dir=str(out), cache=False, verbose=False)  # fmt: skip
    finally:
        sys.setprofile(None)
    trace.calls = calls  # type: ignore[attr-defined]
    return path


def summary(path: list[str]) -> dict[str, Any]:
    first: list[str] = []
    returns: list[str] = []
    for i, module in enumerate(path):
        if module not in first:
            first.append(module)
        elif module in path[: i - 1]:
            returns.append(module)
    return {"first_visit_order": first, "modules": len(first), "steps": len(path), "returns": len(returns),
            "returned_to": {m: returns.count(m) for m in dict.fromkeys(returns)}, "path": path}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from datagen import write_folder

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_folder(Path(tmp) / "data", per_class=6)
        result = summary(trace(folder, Path(tmp) / "runs"))
        result["calls"] = trace.calls  # type: ignore[attr-defined]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['modules']} modules, {result['steps']} steps, {result['returns']} returns to a module left before")
    for i, module in enumerate(result["first_visit_order"], 1):
        print(f"{i:3d}. {module}")
    print("returns:", ", ".join(f"{m} x{n}" for m, n in result["returned_to"].items()) or "none")


if __name__ == "__main__":
    main()
