"""walq's own worker processes import the package their parent runs."""

import subprocess
import sys

from walq.tools.subprocesses import module_command


def test_a_worker_ignores_a_walq_directory_in_the_working_directory(tmp_path):
    # As in a source checkout after `pip install .`: ./walq has no compiled
    # extension, and `python -m walq.tools.demo` imported it instead.
    fake = tmp_path / "walq"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('the checkout, not the installed package')\n")
    (fake / "demo.py").write_text("")
    plain = subprocess.run([sys.executable, "-m", "walq.tools.demo", "--help"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert plain.returncode != 0 and "the checkout" in plain.stderr  # the trap is real
    ours = subprocess.run(module_command("walq.tools.demo") + ["--help"], cwd=tmp_path, capture_output=True, text=True)
    assert ours.returncode == 0, ours.stderr
    assert "barista" in ours.stdout
