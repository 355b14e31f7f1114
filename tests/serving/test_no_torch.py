"""The server never imports torch: not on import, not on any request path."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def test_a_full_request_path_imports_no_torch(tmp_path, mlp):
    (tmp_path / "events.json").write_text(json.dumps(mlp.events[:4]))
    code = textwrap.dedent(
        f"""
        import json, sys
        from serving import create_app

        events = json.load(open({str(tmp_path / "events.json")!r}))
        client = create_app({{"models": {str(tmp_path / "models")!r}}}).test_client()
        answers = [
            client.post("/models/m", data=open({str(mlp.path)!r}, "rb").read()),
            client.get("/models"),
            client.get("/models/m"),
            client.post("/models/m/predict", json={{"events": events}}),
            client.post("/models/m/predict", json={{"inputs": [[0.0] * 14]}}),
            client.post("/models/m/predict", json={{"events": [{{}}]}}),
            client.get("/metrics"),
            client.delete("/models/m"),
        ]
        print(json.dumps([a.status_code for a in answers]))
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "torch")))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    statuses, torch_modules = (json.loads(line) for line in out.stdout.splitlines())
    assert statuses == [201, 200, 200, 200, 200, 400, 200, 200]
    assert torch_modules == []
