"""Smoke test of ``examples/main.py`` in its tiny configuration.

Runs the script as a subprocess (as a user would) on a configuration that
takes seconds, then checks the printed table, ``results.json``, the saved
model and, when matplotlib is installed, the pictures.  A second run hides
matplotlib to check that the example still works without it.
"""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ride

MAIN = Path(__file__).resolve().parents[1] / "examples" / "main.py"
PICTURES = ("samples.png", "loglik_map.png", "training_curve.png")

#: Runs main.py with ``import matplotlib`` failing, as in an environment that
#: installed only the ``test`` extra.
WITHOUT_MATPLOTLIB = (
    "import runpy, sys\n"
    "sys.modules['matplotlib'] = None\n"
    "sys.argv = sys.argv[1:]\n"
    "sys.path.insert(0, str(__import__('pathlib').Path(sys.argv[0]).parent))\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def run_main(output, *prefix):
    command = [sys.executable, *prefix, str(MAIN), "--tiny", "--seed", "1",
               "--verbose", "0", "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def table_rows(stdout):
    """``{model: bits per pixel}`` from the lines of the printed table."""
    rows = {}
    for line in stdout.splitlines():
        match = re.match(r"^(Gaussian|MCGSM|RIDE) \(", line)
        if match:
            # numeric columns: one per test image, "all", training seconds
            numbers = re.findall(r"\s(-?\d+\.\d+|nan|-?inf)(?=\s|$)", line)
            rows[match.group(1)] = float(numbers[-2])
    return rows


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("main")
    return output, run_main(output)


def test_table_has_finite_rows(tiny_run):
    _, stdout = tiny_run
    assert "bits per pixel on the 0-255 scale" in stdout
    rows = table_rows(stdout)
    assert set(rows) == {"Gaussian", "MCGSM", "RIDE"}, stdout
    for value in rows.values():
        assert math.isfinite(value)
        assert 0 < value < 16  # plausible for 8-bit data


def test_results_json_matches_table(tiny_run):
    output, stdout = tiny_run
    results = json.loads((output / "results.json").read_text())
    rows = table_rows(stdout)
    for name, row in results["models"].items():
        assert row["bits_per_pixel"] == pytest.approx(rows[name], abs=5e-4)
    assert results["mode"] == "tiny"


def test_saved_model_loads_and_scores(tiny_run):
    output, _ = tiny_run
    model = ride.load(output / "ride.h5")
    assert isinstance(model, ride.RIDE)
    assert len(model.loss_history_) > 0
    results = json.loads((output / "results.json").read_text())
    assert results["num_scored_pixels"] > 0


def test_pictures_are_written(tiny_run):
    pytest.importorskip("matplotlib")
    output, _ = tiny_run
    for name in PICTURES:
        path = output / name
        assert path.is_file() and path.stat().st_size > 0, name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_without_matplotlib(tmp_path):
    stdout = run_main(tmp_path, "-c", WITHOUT_MATPLOTLIB)
    assert "matplotlib is not installed" in stdout
    assert set(table_rows(stdout)) == {"Gaussian", "MCGSM", "RIDE"}
    assert (tmp_path / "ride.h5").is_file()
    assert not any((tmp_path / name).exists() for name in PICTURES)
