"""``rootstream-serve``: serve the ONNX models of a directory over HTTP.

With ``--workers 1`` a threaded werkzeug server runs the app; with more, gunicorn (its
Python API) forks the workers first and each creates its own app and onnxruntime
sessions, with the machine's CPUs shared among them for intra-op threads.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

log = logging.getLogger("serving.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rootstream-serve", description="Serve the ONNX models of a directory over HTTP."
    )
    parser.add_argument("--models", required=True, help="model repository: NAME/VERSION/model.onnx")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    parser.add_argument("--workers", type=int, default=1, help="processes; >1 runs gunicorn")
    parser.add_argument(
        "--token",
        default=os.environ.get("ROOTSTREAM_SERVE_TOKEN"),
        help="bearer token for the management routes (default $ROOTSTREAM_SERVE_TOKEN)",
    )
    parser.add_argument("--max-upload-mb", type=float, default=512, help="largest ONNX upload")
    parser.add_argument("--max-request-mb", type=float, default=64, help="largest predict body")
    parser.add_argument(
        "--log-level",
        default="info",
        help="info: errors and server events; debug: also a JSON line per successful request",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.workers < 1:
        print("rootstream-serve: error: --workers must be at least 1", file=sys.stderr)
        return 2
    metrics_dir = None
    if args.workers > 1:  # before prometheus-client is imported: it reads this on import
        metrics_dir = tempfile.mkdtemp(prefix="rootstream-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir

    from serving.config import ServerConfig, available_cpus
    from serving.logs import configure_logging
    from serving.store import ModelStore

    configure_logging(args.log_level)
    config = ServerConfig(
        models=Path(args.models),
        token=args.token or None,
        threads=max(1, available_cpus() // args.workers),
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_request_bytes=int(args.max_request_mb * 2**20),
    )
    ModelStore(config.models).clean()
    try:
        if args.workers > 1:
            _serve_gunicorn(config, args.host, args.port, args.workers)
        else:
            _serve_werkzeug(config, args.host, args.port)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _ready(host: str, port: int, workers: int, config: Any) -> None:
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    log.info(
        "listening on %s",
        url,
        extra={
            "fields": {
                "url": url,
                "workers": workers,
                "models": str(config.models),
                "threads": config.threads,
                "auth": config.token is not None,
            }
        },
    )


def _serve_werkzeug(config: Any, host: str, port: int) -> None:
    from werkzeug.serving import make_server

    from serving.app import create_app

    server = make_server(host, port, create_app(config), threaded=True)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    _ready(host, server.port, 1, config)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _serve_gunicorn(config: Any, host: str, port: int, workers: int) -> None:
    from gunicorn.app.base import BaseApplication
    from prometheus_client import multiprocess

    def when_ready(server: Any) -> None:
        _ready(host, server.LISTENERS[0].sock.getsockname()[1], workers, config)

    def child_exit(server: Any, worker: Any) -> None:
        multiprocess.mark_process_dead(worker.pid)

    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "worker_class": "sync",
        "timeout": 120,
        "graceful_timeout": 10,
        "loglevel": "warning",
        "preload_app": False,  # each worker creates its app, and its sessions, after fork
        "when_ready": when_ready,
        "child_exit": child_exit,
        "control_socket_disable": True,  # gunicorn 27 opens one at a fixed path for all servers
    }

    class Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:  # older gunicorn lacks control_socket_disable
                    self.cfg.set(key, value)

        def load(self) -> Any:  # in each worker: onnxruntime imported before fork hangs at exit
            from serving.app import create_app

            return create_app(config)

    Server().run()


if __name__ == "__main__":
    sys.exit(main())
