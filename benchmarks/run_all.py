"""Run the whole benchmark suite, then render the README tables from the results.

    python benchmarks/run_all.py      (or: make bench)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["cli_startup.py", "input_pipeline.py", "allocator.py", "feature_speed.py", "heads.py", "cached_run.py", "training_speed.py", "feed_speed.py", "host_cost.py", "store_fill.py", "ddp_scaling.py",
           "strategies.py", "data_size.py", "runtimes.py", "int8_trained.py", "int8_curve.py", "compare_digits.py", "advise.py", "timm_backbones.py", "labels.py",
           "render_readme.py"]

if __name__ == "__main__":
    for script in SCRIPTS:
        print(f"== {script}", flush=True)
        subprocess.run([sys.executable, str(HERE / script)], check=True)
