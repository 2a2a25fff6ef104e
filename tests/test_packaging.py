"""The package's metadata: the same runtime pins as requirements.txt, the apps and their files, the `langrun` command."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_package_dependencies_are_requirements_txt():
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert sorted(_pyproject()["project"]["dependencies"]) == sorted(line for line in lines if line)


def test_package_holds_the_apps_and_their_files_and_a_langrun_command():
    project = _pyproject()
    assert project["project"]["scripts"] == {"langrun": "langrun.cli:main"}
    assert "setuptools" in project["build-system"]["requires"][0]
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {"langrun", "flows", "webhooks"} <= set(include) and not any(p.startswith(("tests", "bench")) for p in include)
    data = project["tool"]["setuptools"]["package-data"]
    for app, patterns in data.items():
        for pattern in patterns:
            assert list((ROOT / app).glob(pattern)), f"{app}/{pattern} matches nothing"
    # Every app folder holding templates or static files has them listed.
    for app in ("langrun", "flows", "webhooks"):
        for folder in ("templates", "static"):
            if (ROOT / app / folder).exists():
                assert any(p.startswith(folder) for p in data.get(app, [])), f"{app}/{folder} is not packaged"
