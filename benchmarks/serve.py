"""Requests/s and latency of ``rootstream-serve`` against a bare gunicorn + Flask + onnxruntime app.

Both serve the same 28-input MLP (torch, seed 0, exported with ``rootstream.export_onnx``)
with 2 gunicorn sync workers and one onnxruntime intra-op thread per worker, on this
machine, loaded in turns by the same tool (wrk, 16 connections, 2 threads):

- single-row JSON predict: ``{"inputs": [[28 numbers]]}``, requests/s and p50/p99 latency;
- batch of 1024 rows: events/s (both apps), and 1024 raw events
  (``{"events": [{"f0": ..., ...}, ...]}``, preprocessed by the server; rootstream only);
- Open Inference Protocol (KServe v2) infer with the binary tensor extension (what
  ``tritonclient.http`` sends) at batch 1 and 1024 (rootstream only), against onnxruntime
  ``run`` in this process on the same arrays, one thread: the physical limit per core.

Every run is repeated (``--repeat``), interleaving the two apps, after a warm-up; the
median is reported, and the ratio is the median of each repeat's ratio (the two apps run
back to back, under the same load from anything else on the machine). Results go to
``benchmarks/results/serve.json``. Run from the repository root (needs ``wrk``:
``apt-get install wrk``)::

    .venv/bin/python benchmarks/serve.py [--duration 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import requests
import torch

import rootstream
from rootstream import export_onnx
from rootstream.preprocess import FeatureSpec, Spec

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
NUM_INPUTS = 28
CONNECTIONS = 16
WORKERS = 2
TARGET = 0.8  # rootstream-serve / bare app, single-row requests/s

BARE_APP = """\
import os
import numpy as np
import onnxruntime as ort
from flask import Flask, jsonify, request

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(os.environ["MODEL"], options, providers=["CPUExecutionProvider"])
app = Flask(__name__)

@app.post("/predict")
def predict():
    x = np.asarray(request.get_json()["inputs"], dtype=np.float32)
    return jsonify(outputs=session.run(None, {"x": x})[0].tolist())
"""

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY_FILE"), "rb")
wrk.body = f:read("*all")
f:close()
local length = os.getenv("HEADER_LENGTH")
if length ~= nil and length ~= "" then
  wrk.headers["Content-Type"] = nil
  wrk.headers["Inference-Header-Content-Length"] = length
end
"""
BATCH = {"row": 1, "rows1024": 1024, "events1024": 1024, "v2bin1": 1, "v2bin1024": 1024}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per case")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server")
    return parser.parse_args(argv)


def build_model(path: Path) -> None:
    """A 28-input MLP (28 -> 64 -> 64 -> 1), seed 0, exported with its spec."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(NUM_INPUTS, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 1),
        torch.nn.Flatten(0),
    )
    rng = np.random.default_rng(0)
    spec = Spec(
        tuple(
            FeatureSpec(f"f{i}", None, float(c), float(s))
            for i, (c, s) in enumerate(
                zip(rng.normal(0, 2, NUM_INPUTS), rng.uniform(0.5, 3, NUM_INPUTS), strict=True)
            )
        )
    )
    export_onnx(model, spec, path)


def batch_rows() -> np.ndarray:
    """The 1024 rows every body holds (or the first of them), float32 [1024, 28]."""
    return np.random.default_rng(1).normal(0, 2, (1024, NUM_INPUTS)).astype(np.float32)


def v2_binary_body(x: np.ndarray) -> tuple[bytes, int]:
    """A v2 infer body as tritonclient sends it: JSON header, then the raw tensor."""
    header = {
        "inputs": [
            {
                "name": "x",
                "shape": list(x.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": x.nbytes},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    text = json.dumps(header).encode()
    return text + x.astype("<f4").tobytes(), len(text)


def bodies(directory: Path) -> dict[str, Path]:
    """The request bodies: one row, 1024 rows, 1024 raw events, v2 binary 1 and 1024 rows.

    A v2 body's JSON header length is in ``<name>.length`` beside it.
    """
    array = batch_rows()
    rows = array.tolist()
    events = [{f"f{i}": v for i, v in enumerate(row)} for row in rows]
    out = {}
    for name, body in {
        "row": {"inputs": rows[:1]},
        "rows1024": {"inputs": rows},
        "events1024": {"events": events},
    }.items():
        out[name] = directory / f"{name}.json"
        out[name].write_text(json.dumps(body))
    for name, x in {"v2bin1": array[:1], "v2bin1024": array}.items():
        body, length = v2_binary_body(x)
        out[name] = directory / f"{name}.bin"
        out[name].write_bytes(body)
        out[name].with_suffix(".length").write_text(str(length))
    return out


def header_length(body: Path) -> str:
    """The v2 JSON header length of a body file, or "" for a plain JSON body."""
    length = body.with_suffix(".length")
    return length.read_text() if length.exists() else ""


def in_process(model: Path, repeat: int, seconds: float = 3.0) -> dict[str, dict]:
    """onnxruntime ``run`` in this process, one thread, on the v2 arrays: events/s per core."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    array, results = batch_rows(), {}
    for name, x in {"v2bin1": array[:1], "v2bin1024": array}.items():
        feeds = {"x": x}
        for _ in range(100):  # warm-up
            session.run(None, feeds)
        rates = []
        for _ in range(repeat):
            calls, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds:
                for _ in range(50):
                    session.run(None, feeds)
                calls += 50
            rates.append(calls / elapsed)
        calls_per_s = statistics.median(rates)
        results[name] = {
            "calls_per_s": calls_per_s,
            "events_per_s": calls_per_s * len(x),
            "us_per_call": 1e6 / calls_per_s,
        }
    return results


def check_v2_answers(url: str, model: Path, body: Path) -> None:
    """The v2 binary answer equals onnxruntime run in this process on the same array."""
    import onnxruntime as ort

    data, length = body.read_bytes(), int(header_length(body))
    x = np.frombuffer(data[length:], dtype="<f4").reshape(-1, NUM_INPUTS)
    answer = requests.post(
        url, data=data, headers={"Inference-Header-Content-Length": str(length)}, timeout=30
    )
    answer.raise_for_status()
    json_size = int(answer.headers["Inference-Header-Content-Length"])
    (output,) = json.loads(answer.content[:json_size])["outputs"]
    got = np.frombuffer(answer.content[json_size:], dtype="<f4").reshape(output["shape"])
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x})
    np.testing.assert_array_equal(got, expected)


@contextlib.contextmanager
def process(command: list[str], log: Path, env: dict | None = None) -> Iterator[str]:
    """Run a server; yield its URL, read from its log; stop it at the end."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = re.search(r"http://127\.0\.0\.1:\d+", log.read_text())
            if found:
                yield found.group(0)
                break
            if proc.poll() is not None:
                raise RuntimeError(f"{command[0]} exited:\n{log.read_text()}")
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{command} did not start:\n{log.read_text()}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wrk(url: str, body: Path, duration: int, script: Path) -> dict[str, float]:
    """One wrk run: requests/s, p50/p99 latency (ms), non-2xx answers, socket errors."""
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{CONNECTIONS}",
            f"-d{duration}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BODY_FILE": str(body), "HEADER_LENGTH": header_length(body)},
    ).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
    }


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def check_same_answers(rootstream_url: str, bare_url: str, body: Path) -> None:
    data = body.read_bytes()
    headers = {"Content-Type": "application/json"}
    ours = requests.post(rootstream_url, data=data, headers=headers, timeout=30).json()
    bare = requests.post(bare_url, data=data, headers=headers, timeout=30).json()
    assert ours["outputs"] == bare["outputs"], (ours, bare)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("benchmarks/serve.py needs wrk: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="rootstream-serve-bench-"))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:
    model = work / "model.onnx"
    build_model(model)
    files = bodies(work)
    (work / "bare.py").write_text(BARE_APP)
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    bin_dir = Path(sys.executable).parent
    serve = [
        str(bin_dir / "rootstream-serve"),
        "--models",
        str(work / "models"),
        "--port",
        "0",
        "--workers",
        str(WORKERS),
    ]
    bare = [
        str(bin_dir / "gunicorn"),
        "--workers",
        str(WORKERS),
        "--bind",
        "127.0.0.1:0",
        "--chdir",
        str(work),
        "bare:app",
    ]
    with (
        process(serve, work / "serve.log") as ours,
        process(bare, work / "bare.log", env={"MODEL": str(model)}) as theirs,
    ):
        upload = requests.post(f"{ours}/models/mlp", data=model.read_bytes(), timeout=60)
        upload.raise_for_status()
        urls = {
            "rootstream": f"{ours}/models/mlp/predict",
            "bare": f"{theirs}/predict",
            "rootstream-v2": f"{ours}/v2/models/mlp/infer",
        }
        check_same_answers(urls["rootstream"], urls["bare"], files["row"])
        check_same_answers(urls["rootstream"], urls["bare"], files["rows1024"])
        check_v2_answers(urls["rootstream-v2"], model, files["v2bin1"])
        check_v2_answers(urls["rootstream-v2"], model, files["v2bin1024"])
        cases = [
            ("row", "bare"),
            ("row", "rootstream"),
            ("rows1024", "bare"),
            ("rows1024", "rootstream"),
            ("events1024", "rootstream"),
            ("v2bin1", "rootstream-v2"),
            ("v2bin1024", "rootstream-v2"),
        ]
        for body, app in cases:  # warm-up: every worker loads its session
            wrk(urls[app], files[body], args.warmup, script)
        runs: dict[str, list[dict]] = {f"{app}/{body}": [] for body, app in cases}
        for repeat in range(args.repeat):
            for body, app in cases:
                result = wrk(urls[app], files[body], args.duration, script)
                runs[f"{app}/{body}"].append(result)
                print(
                    f"[{repeat + 1}/{args.repeat}] {app:13s} {body:10s} "
                    f"{result['requests_per_s']:9.1f} req/s  p50 {result['p50_ms']:.2f} ms  "
                    f"p99 {result['p99_ms']:.2f} ms  non-2xx {result['non_2xx']}",
                    flush=True,
                )
    limit = in_process(model, args.repeat)
    report(args, runs, limit)


def report(args: argparse.Namespace, runs: dict[str, list[dict]], limit: dict) -> None:
    def median(case: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[case])

    summary = {
        case: {
            "requests_per_s": median(case, "requests_per_s"),
            "events_per_s": median(case, "requests_per_s") * BATCH[case.split("/")[1]],
            "p50_ms": median(case, "p50_ms"),
            "p99_ms": median(case, "p99_ms"),
            "non_2xx": sum(r["non_2xx"] for r in runs[case]),
            "socket_errors": sum(r["socket_errors"] for r in runs[case]),
        }
        for case in runs
    }
    paired = [  # each repeat runs the two apps back to back: their ratio sees the same load
        ours["requests_per_s"] / bare["requests_per_s"]
        for ours, bare in zip(runs["rootstream/row"], runs["bare/row"], strict=True)
    ]
    ratio = statistics.median(paired)
    non_2xx = sum(s["non_2xx"] for s in summary.values())
    result = {
        "benchmark": "benchmarks/serve.py",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "versions": _versions(),
        "setup": {
            "model": "MLP 28-64-64-1 (torch seed 0) exported with rootstream.export_onnx",
            "workers": WORKERS,
            "onnxruntime_threads_per_worker": 1,
            "load_tool": f"wrk -t2 -c{CONNECTIONS}",
            "duration_s": args.duration,
            "repeat": args.repeat,
            "statistic": "median",
        },
        "summary": summary,
        "ratio_single_row": ratio,
        "ratio_single_row_per_repeat": paired,
        "ratio_of_medians_single_row": summary["rootstream/row"]["requests_per_s"]
        / summary["bare/row"]["requests_per_s"],
        "target": {"ratio_single_row": TARGET, "non_2xx": 0},
        "met": ratio >= TARGET and non_2xx == 0,
        "onnxruntime_in_process_1_thread": limit,
        "v2_binary_over_in_process": {
            body: summary[f"rootstream-v2/{body}"]["events_per_s"] / limit[body]["events_per_s"]
            for body in limit
        },
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(result, indent=1) + "\n")
    print()
    print("| app | body | requests/s | events/s | p50 (ms) | p99 (ms) | non-2xx |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for case, s in summary.items():
        app, body = case.split("/")
        print(
            f"| {app} | {body} | {s['requests_per_s']:,.0f} | {s['events_per_s']:,.0f} | "
            f"{s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {s['non_2xx']} |"
        )
    for body, figures in limit.items():
        served = summary[f"rootstream-v2/{body}"]["events_per_s"]
        print(
            f"| onnxruntime in-process, 1 thread | {body} | {figures['calls_per_s']:,.0f} | "
            f"{figures['events_per_s']:,.0f} | {figures['us_per_call'] / 1000:.3f} | | |  "
            f"(v2 served / in-process: {served / figures['events_per_s']:.3f})"
        )
    print(
        f"\nsingle row, rootstream-serve / bare app: {ratio:.2f}x (target >= {TARGET}x); "
        f"non-2xx: {non_2xx}; wrote {RESULTS / 'serve.json'}"
    )


def _commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=HERE,
        ).stdout.strip()
    return None


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()
    packages = ("onnxruntime", "flask", "gunicorn", "torch", "numpy")
    return {
        "rootstream": rootstream.__version__,
        **{p: version(p) for p in packages},
        "wrk": wrk_version[1] if len(wrk_version) > 1 else "?",
    }


if __name__ == "__main__":
    main()
