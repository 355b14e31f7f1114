"""Fuzz every route of ``docs/openapi.yaml`` with schemathesis: no answer may be a 5xx.

Each operation is fuzzed with data that fits the description (positive) and with data that
breaks it (negative), once with generated path parameters and once aimed at a stored model
(``higgs``), so that generated infer and predict requests reach the model's own checks.
Destructive operations (DELETE, unload) are left out: their 404/503 answers would end the
fuzzing of the model early; ``test_v2.py`` and ``test_server.py`` cover them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.serving.conftest import running_server

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
TOKEN = "fuzz-token"
SCHEMA = (
    schemathesis.openapi.from_path(OPENAPI)
    .exclude(method="DELETE")
    .exclude(path="/v2/repository/models/{name}/unload")
)
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory, mlp):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "models" / "higgs" / "1").mkdir(parents=True)
    shutil.copy(mlp.path, root / "models" / "higgs" / "1" / "model.onnx")
    with running_server(root / "models", root / "server.log", "--token", TOKEN) as server:
        yield server


def test_every_route_is_described(tmp_path):
    from serving.app import create_app

    described = {
        (method.upper(), path)
        for path, item in schemathesis.openapi.from_path(OPENAPI).raw_schema["paths"].items()
        for method in item
        if method != "parameters"
    }
    app = create_app({"models": tmp_path})
    served = set()
    for rule in app.url_map.iter_rules():  # every route, none left out (no /static either)
        path = rule.rule.replace("<int:version>", "{version}").replace("<name>", "{name}")
        served |= {(m, path) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert served == described


def runs() -> list[tuple[str, str, GenerationMode]]:
    """(operation, target, mode) for every combination that can generate something.

    ``higgs`` only where the route names a model; negative data only where some part of the
    request can break its description (a generated path parameter, a header, a JSON body).
    """
    combinations = []
    for label, operation in sorted(OPERATIONS.items()):
        for target in ("generated", "higgs"):
            if target == "higgs" and "{name}" not in operation.path:
                continue
            breakable = [
                *(operation.path_parameters if target == "generated" else ()),
                *operation.headers,
                *operation.query,
                *(b for b in operation.body if b.media_type == "application/json"),
            ]
            combinations.append((label, target, GenerationMode.POSITIVE))
            if breakable:
                combinations.append((label, target, GenerationMode.NEGATIVE))
    return combinations


@pytest.mark.slow
@pytest.mark.parametrize(("label", "target", "mode"), runs())
def test_no_server_errors(fuzzed, label, target, mode):
    operation = OPERATIONS[label]
    path_parameters = {"name": "higgs"} if target == "higgs" else None
    strategy = operation.as_strategy(mode, path_parameters=path_parameters)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    @given(case=strategy)
    # the server is under test, not the strategies: slow or large generation is fine
    @settings(
        max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def fuzz(case):
        case.call_and_validate(base_url=fuzzed.url, headers=headers, checks=[not_a_server_error])

    fuzz()
    assert fuzzed.process.poll() is None
