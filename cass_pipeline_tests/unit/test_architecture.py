"""The layering rule: domain code never imports the orchestration or tracking stacks."""

import ast
from pathlib import Path

import cass_pipeline

PACKAGE = Path(cass_pipeline.__file__).parent
FORBIDDEN = {"dagster", "dagster_webserver", "dagster_pipes", "mlflow"}


def imported_modules(source: str) -> set[str]:
    """Every module `source` imports, at any depth (`from package import name` also adds
    `package.name`, which may be a module)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return found


def forbidden_imports(source: str) -> set[str]:
    """Top-level packages from FORBIDDEN that `source` imports, at any depth."""
    return {name.split(".")[0] for name in imported_modules(source)} & FORBIDDEN


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


#: Stages of `domain/`, lowest first: a stage imports only from lower ranks and the shared
#: root modules; stages of the same rank never import each other.
STAGE_RANK = {
    "cohort": 0,
    "imaging": 1,
    "reports": 1,
    "model": 2,
    "synthetic": 2,
    "evaluation": 3,
    "prediction": 4,
    "dicom": 5,
    "review": 6,
}
#: Cross-cutting facts and primitives, the only modules at the root of `domain/`.
SHARED = {
    "anatomy",
    "device",
    "generations",
    "options",
    "plots",
    "privacy",
    "storage",
    "workers",
}


def domain_imports(source: str) -> set[str]:
    """The first part under `cass_pipeline.domain` of each module that `source` imports."""
    prefix = "cass_pipeline.domain."
    return {name.split(".")[2] for name in imported_modules(source) if name.startswith(prefix)}


def upward_imports(part: str, imported: set[str]) -> set[str]:
    """What a module in `part` (a stage, or a shared module) imports against the rule."""
    if part in SHARED:
        return imported - SHARED
    rank = STAGE_RANK[part]
    return {
        name for name in imported - SHARED - {part} if STAGE_RANK.get(name, len(STAGE_RANK)) >= rank
    }


def test_stage_rule_detects_planted_imports():
    planted = (
        "from cass_pipeline.domain.prediction.predictor import Predictor\n"
        "from cass_pipeline.domain import anatomy\n"
        "def f():\n    from cass_pipeline.domain.reports.deid import DATE\n"
    )
    assert domain_imports(planted) == {"prediction", "anatomy", "reports"}
    assert upward_imports("imaging", domain_imports(planted)) == {"prediction", "reports"}
    assert upward_imports("prediction", domain_imports(planted)) == set()
    assert upward_imports("storage", {"anatomy", "cohort"}) == {"cohort"}


def test_domain_root_holds_only_shared_modules_and_stage_packages():
    root = PACKAGE / "domain"
    modules = {p.stem for p in root.glob("*.py")} - {"__init__"}
    packages = {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}
    assert modules == SHARED
    assert packages == set(STAGE_RANK)


def test_no_import_runs_from_a_lower_stage_to_a_higher_one():
    root = PACKAGE / "domain"
    offenders = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        part = parts[0] if len(parts) > 1 else path.stem
        if part == "__init__":
            continue
        if found := upward_imports(part, domain_imports(path.read_text())):
            offenders[str(path.relative_to(PACKAGE))] = sorted(found)
    assert offenders == {}
