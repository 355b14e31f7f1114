"""Requests/s and latency of ``rootstream-serve`` against a bare gunicorn + Flask + onnxruntime app.

Both serve the same 28-input MLP (torch, seed 0, exported with ``rootstream.export_onnx``)
with 2 gunicorn workers (sync, gunicorn's default) and one
onnxruntime intra-op thread per worker, on this machine, loaded in turns by the same tool
(wrk, 16 connections, 2 threads):

- single-row JSON predict: ``{"inputs": [[28 numbers]]}``, requests/s and p50/p99 latency;
- batch of 1024 rows: events/s (both apps), and 1024 raw events
  (``{"events": [{"f0": ..., ...}, ...]}``, preprocessed by the server; rootstream only);
- Open Inference Protocol (KServe v2) infer with the binary tensor extension (what
  ``tritonclient.http`` sends) at batch 1 and 1024 (rootstream only), against onnxruntime
  ``run`` in this process on the same arrays, one thread: the physical limit per core;
- dynamic batching: a heavy MLP (28-1024-1024-1024-1) under single-row JSON predict from
  32 connections, served without and with ``dynamic_batching`` in its config.pbtxt, and a
  trivial model (one Linear layer) on the same server: the ceiling the HTTP path sets;
- gRPC infer (``tritonclient.grpc``) against the v2 REST binary route, both driven by the
  same Python client threads (:mod:`serve_load`), at batch 1 and 1024.

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
import itertools
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
from serve_load import closed_loop, grpc_sender, http_sender  # benchmarks/ is on sys.path

import rootstream
from rootstream import export_onnx
from rootstream.preprocess import FeatureSpec, Spec

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
NUM_INPUTS = 28
CONNECTIONS = 16
WORKERS = 2
TARGET = 0.9  # rootstream-serve / bare app, single-row requests/s
SMALL, HEAVY, TRIVIAL = (64, 64), (1024, 1024, 1024), ()  # hidden layers of each MLP
HEAVY_CONNECTIONS = 32
BATCHING_CONFIG = """\
max_batch_size: 32
dynamic_batching { preferred_batch_size: [16] max_queue_delay_microseconds: 1000 }
instance_group [{ count: 1 }]
"""
BATCHING_TARGET = {"speedup": 1.8, "of_trivial": 0.8}  # heavy batched / heavy, / trivial
CLIENT_THREADS = 8  # Python client threads for the gRPC / v2 REST comparison

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
HEADER = "Inference-Header-Content-Length"
BATCH = {"row": 1, "rows1024": 1024, "events1024": 1024, "v2bin1": 1, "v2bin1024": 1024}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per case")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server")
    return parser.parse_args(argv)


def build_model(path: Path, hidden: tuple[int, ...] = SMALL) -> None:
    """A 28-input MLP (28 -> hidden... -> 1, ReLU between), seed 0, exported with its spec."""
    torch.manual_seed(0)
    widths = (NUM_INPUTS, *hidden)
    layers: list[torch.nn.Module] = []
    for width_in, width_out in itertools.pairwise(widths):
        layers += [torch.nn.Linear(width_in, width_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(widths[-1], 1), torch.nn.Flatten(0))
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
    answer = requests.post(url, data=data, headers={HEADER: str(length)}, timeout=30)
    answer.raise_for_status()
    json_size = int(answer.headers[HEADER])
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


def wrk(
    url: str, body: Path, duration: int, script: Path, connections: int = CONNECTIONS
) -> dict[str, float]:
    """One wrk run: requests/s, p50/p99 latency (ms), non-2xx answers, socket errors."""
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
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
    runs = compare_with_bare(args, work, model, files, script)
    batching, grpc = compare_batching_and_grpc(args, work, model, files, script)
    limit = in_process(model, args.repeat)
    report(args, runs, limit, batching, grpc)


def rootstream_serve(models: Path, *options: str) -> list[str]:
    """The command serving ``models`` with 2 workers on free ports."""
    executable = Path(sys.executable).parent / "rootstream-serve"
    command = [str(executable), "--models", str(models), "--port", "0"]
    return [*command, "--workers", str(WORKERS), *options]


def compare_with_bare(
    args: argparse.Namespace, work: Path, model: Path, files: dict[str, Path], script: Path
) -> dict[str, list[dict]]:
    """wrk against rootstream-serve and the bare app, in turns: every run of every case."""
    bare = [
        str(Path(sys.executable).parent / "gunicorn"),
        "--workers",
        str(WORKERS),
        "--bind",
        "127.0.0.1:0",
        "--chdir",
        str(work),
        "bare:app",
    ]
    with (
        process(rootstream_serve(work / "models"), work / "serve.log") as ours,
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
        return measure(
            args, [(f"{app}/{body}", urls[app], files[body]) for body, app in cases], script
        )


def measure(
    args: argparse.Namespace,
    cases: list[tuple[str, str, Path]],
    script: Path,
    connections: int = CONNECTIONS,
) -> dict[str, list[dict]]:
    """wrk on every ``(case, url, body)`` in turns, ``--repeat`` times after a warm-up
    (every worker loads its session): ``{case: [run, ...]}``."""
    for _, url, body in cases:
        wrk(url, body, args.warmup, script, connections)
    runs: dict[str, list[dict]] = {case: [] for case, _, _ in cases}
    for repeat in range(args.repeat):
        for case, url, body in cases:
            result = wrk(url, body, args.duration, script, connections)
            runs[case].append(result)
            _print_run(repeat, args.repeat, case, result)
    return runs


def _print_run(repeat: int, repeats: int, case: str, result: dict) -> None:
    print(
        f"[{repeat + 1}/{repeats}] {case:32s} {result['requests_per_s']:9.1f} req/s  "
        f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  "
        f"failed {_failed(result)}",
        flush=True,
    )


def store_batching_models(models: Path, small: Path) -> None:
    """``heavy`` and ``heavy-batched`` (the same heavy MLP, the second with
    :data:`BATCHING_CONFIG`), ``trivial`` (one Linear layer) and ``mlp`` (the small MLP)."""
    for name in ("heavy", "trivial", "mlp"):
        (models / name / "1").mkdir(parents=True)
    build_model(models / "heavy" / "1" / "model.onnx", HEAVY)
    build_model(models / "trivial" / "1" / "model.onnx", TRIVIAL)
    shutil.copy(small, models / "mlp" / "1" / "model.onnx")
    shutil.copytree(models / "heavy", models / "heavy-batched")
    (models / "heavy-batched" / "config.pbtxt").write_text(BATCHING_CONFIG)


def compare_batching_and_grpc(
    args: argparse.Namespace, work: Path, model: Path, files: dict[str, Path], script: Path
) -> tuple[dict, dict[str, list[dict]]]:
    """On one server with gRPC: the heavy model unbatched and batched and the trivial model
    under wrk (32 connections, single-row JSON), with the batch sizes the batcher ran;
    then gRPC against v2 REST binary."""
    models = work / "batching-models"
    store_batching_models(models, model)
    log = work / "serve-batching.log"
    with process(rootstream_serve(models, "--threads", "16", "--grpc-port", "0"), log) as url:
        predict = {name: f"{url}/models/{name}/predict" for name in ("heavy", "heavy-batched")}
        check_close_answers(predict["heavy"], predict["heavy-batched"], files["row"])
        cases = [
            (f"{name}/row", f"{url}/models/{name}/predict", files["row"])
            for name in ("trivial", "heavy", "heavy-batched")
        ]
        batching = measure(args, cases, script, HEAVY_CONNECTIONS)
        sizes = batch_sizes(url, "heavy-batched")
        grpc = compare_grpc(args, url, grpc_address(log), model, files)
    return {"runs": batching, "batch_sizes": sizes}, grpc


def batch_sizes(url: str, model: str) -> dict[int, int]:
    """``{batch size: runs}`` of the model's batcher so far (all workers), from /metrics."""
    sizes = {}
    for line in requests.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("rootstream_model_batch_duration_seconds_count{") and (
            f'model="{model}"' in line
        ):
            size = int(re.search(r'batch_size="(\d+)"', line).group(1))
            sizes[size] = int(float(line.rsplit(" ", 1)[1]))
    return dict(sorted(sizes.items()))


def grpc_address(log: Path) -> str:
    """The gRPC ``host:port`` a server's "listening on" log line gives."""
    for line in log.read_text().splitlines():
        if line.startswith("{") and '"grpc"' in line:
            return json.loads(line)["grpc"]
    raise RuntimeError(f"no gRPC address in {log}:\n{log.read_text()}")


def compare_grpc(
    args: argparse.Namespace, url: str, address: str, model: Path, files: dict[str, Path]
) -> dict[str, list[dict]]:
    """gRPC (tritonclient.grpc) and the v2 REST binary route, from the same Python client
    threads, at 1 and 1024 rows, in turns: ``{case: [run, ...]}``."""
    x = batch_rows()
    check_grpc_answers(address, model, x)
    senders = {}
    for body, rows in (("v2bin1", 1), ("v2bin1024", 1024)):
        data, headers = files[body].read_bytes(), {HEADER: header_length(files[body])}
        senders[f"grpc/{body}"] = grpc_sender(address, "mlp", x[:rows])
        senders[f"rest-v2/{body}"] = http_sender(f"{url}/v2/models/mlp/infer", data, headers)
    for make in senders.values():
        closed_loop(make, CLIENT_THREADS, args.warmup)
    runs: dict[str, list[dict]] = {case: [] for case in senders}
    for repeat in range(args.repeat):
        for case, make in senders.items():
            runs[case].append(closed_loop(make, CLIENT_THREADS, args.duration))
            _print_run(repeat, args.repeat, case, runs[case][-1])
    return runs


def check_grpc_answers(address: str, model: Path, x: np.ndarray) -> None:
    """gRPC answers equal onnxruntime run in this process on the same array."""
    import onnxruntime as ort
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(address)
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    got = client.infer("mlp", [tensor]).as_numpy("output")
    client.close()
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(got, session.run(None, {"x": x})[0])


def check_close_answers(url: str, other: str, body: Path) -> None:
    """Two predict routes answer the same body alike (a batched run may round differently)."""
    data, headers = body.read_bytes(), {"Content-Type": "application/json"}
    first, second = (
        requests.post(u, data=data, headers=headers, timeout=30).json()["outputs"]
        for u in (url, other)
    )
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)


def report(
    args: argparse.Namespace,
    runs: dict[str, list[dict]],
    limit: dict,
    batching: dict,
    grpc: dict[str, list[dict]],
) -> None:
    summary = summarize(runs)
    ratio, paired = paired_ratio(runs, "rootstream/row", "bare/row")
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
        "batching": batching_section(batching),
        "grpc": grpc_section(grpc),
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(result, indent=1) + "\n")
    print_summary(summary)
    for body, figures in limit.items():
        served = summary[f"rootstream-v2/{body}"]["events_per_s"]
        print(
            f"| onnxruntime in-process, 1 thread | {body} | {figures['calls_per_s']:,.0f} | "
            f"{figures['events_per_s']:,.0f} | {figures['us_per_call'] / 1000:.3f} | | |  "
            f"(v2 served / in-process: {served / figures['events_per_s']:.3f})"
        )
    print(
        f"\nsingle row, rootstream-serve / bare app: {ratio:.2f}x (target >= {TARGET}x); "
        f"non-2xx: {non_2xx}"
    )
    print_summary(result["batching"]["summary"])
    print(
        f"\nheavy model, batched / unbatched: {result['batching']['speedup']:.2f}x, "
        f"batched / trivial: {result['batching']['of_trivial']:.2f}x (targets "
        f">= {BATCHING_TARGET['speedup']}x, >= {BATCHING_TARGET['of_trivial']}x, p99 no "
        f"worse); met: {result['batching']['met']}; mean batch size "
        f"{result['batching']['mean_batch_size']:.1f}"
    )
    print_summary(result["grpc"]["summary"])
    print(f"\ngRPC / v2 REST binary, requests/s: {result['grpc']['grpc_over_rest']}")
    print(f"wrote {RESULTS / 'serve.json'}")


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Each case's medians (rates, latencies) and sums (failures) over its runs."""
    summary = {}
    for case, results in runs.items():
        rate = statistics.median(r["requests_per_s"] for r in results)
        summary[case] = {
            "requests_per_s": rate,
            "events_per_s": rate * BATCH[case.split("/")[1]],
            "p50_ms": statistics.median(r["p50_ms"] for r in results),
            "p99_ms": statistics.median(r["p99_ms"] for r in results),
            **{
                key: sum(r[key] for r in results)
                for key in ("non_2xx", "socket_errors", "errors")
                if key in results[0]
            },
        }
    return summary


def paired_ratio(runs: dict[str, list[dict]], case: str, other: str) -> tuple[float, list[float]]:
    """The median of each repeat's requests/s ratio ``case / other``, and the ratios: the
    two ran back to back, under the same load from anything else on the machine."""
    ratios = [
        ours["requests_per_s"] / theirs["requests_per_s"]
        for ours, theirs in zip(runs[case], runs[other], strict=True)
    ]
    return statistics.median(ratios), ratios


def batching_section(batching: dict) -> dict:
    runs, sizes = batching["runs"], batching["batch_sizes"]
    summary = summarize(runs)
    speedup, speedups = paired_ratio(runs, "heavy-batched/row", "heavy/row")
    of_trivial, of_trivials = paired_ratio(runs, "heavy-batched/row", "trivial/row")
    p99_no_worse = summary["heavy-batched/row"]["p99_ms"] <= summary["heavy/row"]["p99_ms"]
    return {
        "setup": {
            "models": {
                "heavy": f"MLP 28-{'-'.join(map(str, HEAVY))}-1, no config.pbtxt",
                "heavy-batched": "the same ONNX file, with config.pbtxt",
                "trivial": "one Linear layer (28-1), no config.pbtxt",
            },
            "config_pbtxt": BATCHING_CONFIG,
            "load_tool": f"wrk -t2 -c{HEAVY_CONNECTIONS}, single-row JSON predict",
        },
        "summary": summary,
        "speedup": speedup,
        "speedup_per_repeat": speedups,
        "of_trivial": of_trivial,
        "of_trivial_per_repeat": of_trivials,
        "p99_no_worse": p99_no_worse,
        "batch_sizes": sizes,
        "mean_batch_size": sum(k * n for k, n in sizes.items()) / max(1, sum(sizes.values())),
        "target": {**BATCHING_TARGET, "p99_no_worse": True},
        "met": speedup >= BATCHING_TARGET["speedup"]
        and of_trivial >= BATCHING_TARGET["of_trivial"]
        and p99_no_worse,
        "runs": runs,
    }


def grpc_section(runs: dict[str, list[dict]]) -> dict:
    return {
        "setup": {
            "model": "MLP 28-64-64-1, as above",
            "load_tool": f"{CLIENT_THREADS} Python client threads (benchmarks/serve_load.py): "
            "tritonclient.grpc, requests posting tritonclient.http's binary body",
        },
        "summary": summarize(runs),
        "grpc_over_rest": {
            body: paired_ratio(runs, f"grpc/{body}", f"rest-v2/{body}")[0]
            for body in ("v2bin1", "v2bin1024")
        },
        "runs": runs,
    }


def _failed(figures: dict) -> int:
    """Requests answered with an error: non-2xx over HTTP (wrk), errors (Python clients)."""
    return figures.get("non_2xx", 0) + figures.get("errors", 0)


def print_summary(summary: dict[str, dict]) -> None:
    print()
    print("| app | body | requests/s | events/s | p50 (ms) | p99 (ms) | failed |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for case, s in summary.items():
        app, body = case.split("/")
        failed = _failed(s)
        print(
            f"| {app} | {body} | {s['requests_per_s']:,.0f} | {s['events_per_s']:,.0f} | "
            f"{s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {failed} |"
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
