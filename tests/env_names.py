"""The environment variables langrun's code reads, and those .env.example documents: for the tests that compare them
with .env.example, compose.yaml and the unit files."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = ("langrun", "flows", "webhooks")
_READS = [
    re.compile(r'\benv(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]*)"'),
    re.compile(r'os\.environ\.get\(\s*"([A-Z][A-Z0-9_]*)"'),
    re.compile(r'os\.getenv\(\s*"([A-Z][A-Z0-9_]*)"'),
    re.compile(r'os\.environ\[\s*"([A-Z][A-Z0-9_]*)"\s*\]'),
]
_EXAMPLE = re.compile(r"^# ([A-Z][A-Z0-9_]*)=(.*)$")


def settings_read() -> set[str]:
    """Every variable name the apps read from the environment (Django's own DJANGO_SETTINGS_MODULE aside)."""
    names = set()
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            text = path.read_text()
            for pattern in _READS:
                names.update(pattern.findall(text))
    return names - {"DJANGO_SETTINGS_MODULE"}


def settings_defaults() -> dict[str, object]:
    """langrun/settings.py's literal defaults (`env.int("X", default=60)`), by name; computed defaults are left out."""
    defaults = {}
    for node in ast.walk(ast.parse((ROOT / "langrun" / "settings.py").read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", None) == "env":
            default = next((k.value for k in node.keywords if k.arg == "default"), None)
            if default is not None and node.args and isinstance(node.args[0], ast.Constant):
                try:
                    defaults[node.args[0].value] = _literal(default)
                except ValueError:
                    pass
    return defaults


def _literal(node: ast.AST):
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        return _literal(node.left) * _literal(node.right)
    return ast.literal_eval(node)


def env_example() -> dict[str, tuple[str, str]]:
    """.env.example's settings: name -> (value as written, the comment line above it)."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    found = {}
    for i, line in enumerate(lines):
        if match := _EXAMPLE.match(line):
            found[match[1]] = (match[2], lines[i - 1] if i else "")
    return found
