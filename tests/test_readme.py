"""The README's set-up commands are the ones CI runs."""

import re


def test_ci_runs_the_readme_test_command(root):
    readme = (root / "README.md").read_text()
    blocks = re.findall(r"```\n(.*?)\n```", readme, re.S)
    test_cmd = next(b for b in blocks if "pytest" in b)
    demo_cmd = next(b for b in blocks if b.endswith("rtdecoder demo"))
    ci = (root / ".ci" / "run").read_text()
    assert test_cmd.strip() in ci.splitlines()
    assert demo_cmd.startswith("python3.11 -m venv .venv")
