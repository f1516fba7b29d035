"""Fine-tuning works: the tiny model trained by `sa2va train` on generated shapes (2 cores, about a
minute) ends with a training loss well below its start and better masks on held-out images."""
import os

from conftest import fixture

from sa2va.data import demo


def test_fine_tuning_on_generated_shapes_lowers_the_loss_and_improves_held_out_masks(tmp_path):
    tiny = fixture("sa2va-tiny")
    result = demo.run(str(tiny), str(tmp_path / "demo"), demo.find_cli(os.environ.get("SA2VA_CLI")))
    assert demo.check(result) == [], result
    assert result["steps"] == 16


def test_a_wrong_model_or_program_is_one_line_not_a_traceback(tmp_path):
    import subprocess
    import sys

    cli = os.environ.get("SA2VA_CLI") or "sa2va"
    cases = [(["--model", str(tmp_path / "nomodel"), "--cli", cli], "not a model folder"),
             (["--model", str(fixture("sa2va-tiny")), "--cli", str(tmp_path / "nosuch")], "not an executable sa2va program")]
    for args, message in cases:
        done = subprocess.run([sys.executable, "-m", "sa2va.data", "shapes-demo", "--out", str(tmp_path / "out"), *args],
                              capture_output=True, text=True)
        assert done.returncode != 0
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert not (tmp_path / "out").exists()
