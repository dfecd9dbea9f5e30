"""The layering rule: domain code never imports the orchestration or tracking stacks."""

import ast
from pathlib import Path

import cass_pipeline

PACKAGE = Path(cass_pipeline.__file__).parent
FORBIDDEN = {"dagster", "dagster_webserver", "dagster_pipes", "mlflow"}


def forbidden_imports(source: str) -> set[str]:
    """Top-level packages from FORBIDDEN that `source` imports, at any depth."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & FORBIDDEN
    return found


def domain_files() -> list[Path]:
    return [*sorted((PACKAGE / "domain").rglob("*.py")), PACKAGE / "settings.py"]


def test_rule_detects_planted_imports():
    planted = "import os\ndef f():\n    import mlflow.pytorch\nfrom dagster import asset\n"
    assert forbidden_imports(planted) == {"mlflow", "dagster"}


def test_domain_modules_never_import_dagster_or_mlflow():
    offenders = {
        str(path.relative_to(PACKAGE)): found
        for path in domain_files()
        if (found := forbidden_imports(path.read_text()))
    }
    assert len(domain_files()) > 2
    assert offenders == {}
