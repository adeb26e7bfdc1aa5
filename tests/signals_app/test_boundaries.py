"""What signals_app may import: no torch outside the gpu path (the web process and default
workers import these modules), ccxt only in its source, never trading_app."""

import ast
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "signals_app"


def test_the_cycle_and_the_web_side_load_neither_torch_nor_ccxt():
    code = (
        "import django, sys; django.setup()\n"
        "import signals_app.tasks, signals_app.selectors, signals_app.admin\n"
        "import signals_app.services.cycle, signals_app.services.predictions\n"
        "import signals_app.services.generate, signals_app.services.training\n"
        "from signals_app.sources import candle_source\n"
        "candle_source('simulated')\n"
        "print(sorted({'torch', 'ccxt'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"DJANGO_SETTINGS_MODULE": "botai.settings", "PATH": "/usr/bin:/bin"},
        cwd=APP.parent, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert out.strip().splitlines()[-1] == "[]"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_ccxt_only_in_its_source_and_trading_app_nowhere():
    for path in APP.rglob("*.py"):
        imported = _imports(path)
        assert not any(name.split(".")[0] == "trading_app" for name in imported), path
        if "ccxt" in {name.split(".")[0] for name in imported}:
            assert path == APP / "sources" / "ccxt.py", path
