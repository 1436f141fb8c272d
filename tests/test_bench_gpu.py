"""benchmarks/bench_gpu.py runs end to end at tiny shapes on the CPU and prints its table."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
_N = r"([\d.]+)"
ROW = re.compile(rf"^(sd15|sdxl)\s+(no|yes)\s+(.+?)\s+(\d+)\s+{_N} \[\s*{_N}-\s*{_N}\]\s+{_N} \[\s*{_N}-\s*{_N}\]\s+([\d.e+-]+)x$")
MODES = ("diffusers", "t2ibias (sample-wise)", "t2ibias --fast-batching")


def _load():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("models", ["sd15", pytest.param("sd15,sdxl", marks=pytest.mark.slow)])
def test_tiny_cpu_run_prints_one_row_per_model_mode_and_batch_size(models, capsys, t2ibias_cache, one_torch_thread):
    bench = _load()
    assert bench.main(["--tiny", "--device", "cpu", "--models", models, "--steps", "1", "--batch-sizes", "1,2",
                       "--images", "2", "--repeats", "1", "--compile", "off", "--peak-tflops", "1"]) == 0
    out = capsys.readouterr().out
    rows = [m.groups() for m in map(ROW.match, out.splitlines()) if m]
    assert {(r[0], r[2], int(r[3])) for r in rows} == {(m, mode, b) for m in models.split(",") for mode in MODES for b in (1, 2)}
    for r in rows:
        rate, ratio, floor = float(r[4]), float(r[7]), float(r[10])
        assert float(r[5]) <= rate <= float(r[6]) and float(r[8]) <= ratio <= float(r[9])
        assert rate > 0 and ratio > 0 and 0 < floor < 1  # a tiny CPU model is far below 1 TFLOP/s
        if r[2] == "diffusers":
            assert ratio == 1.0  # its own baseline
    assert "GFLOP per image" in out


def test_batch_sizes_must_divide_the_image_count():
    with pytest.raises(SystemExit):
        _load().main(["--tiny", "--device", "cpu", "--batch-sizes", "3", "--images", "8"])
