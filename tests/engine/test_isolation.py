import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_engine_imports_without_django():
    code = "import sys, flows.engine; bad = [m for m in sys.modules if m == 'django' or m.startswith('django.')]; print(bad); sys.exit(bool(bad))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_engine_sources_do_not_mention_django():
    for path in (ROOT / "flows" / "engine").rglob("*.py"):
        assert "import django" not in path.read_text() and "from django" not in path.read_text(), path


def test_importers_import_without_django():
    code = "import sys, flows.importers; bad = [m for m in sys.modules if m == 'django' or m.startswith('django.')]; print(bad); sys.exit(bool(bad))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
