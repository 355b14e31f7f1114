"""``rootstream-serve``: serve the ONNX models of a directory over HTTP (and gRPC).

With ``--workers 1`` a threaded werkzeug server runs the app; with more, gunicorn (its
Python API) forks the workers first and each creates its own app and onnxruntime
sessions, with the machine's CPUs shared among them for intra-op threads. The workers
are sync (one request at a time), or threaded (``gthread``) with ``--threads`` above 1,
so that a model's dynamic batcher in each worker sees concurrent requests.

Sync workers share one listening socket: a worker takes a connection when it is free.
Threaded workers keep connections alive, and on a shared socket whichever woke first
accepted them (32 landed 1/31 on two workers as often as 16/16): they listen each on a
socket of its own, joined with ``SO_REUSEPORT`` (gunicorn's ``reuse_port``), so that the
kernel spreads the connections evenly. The main process reserves such a port first (bound,
not listening, so no other program takes it, and ``--port 0`` is one port for all). With
``--grpc-port``, every one of these processes also runs a gRPC server
(:mod:`serving.grpcserver`) on that port, on top of the same app, joined to a port
reserved the same way. No process is added: the gRPC servers stop with the processes that
run them.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

log = logging.getLogger("serving.cli")
GRPC_GRACE_SECONDS = 5.0  # in-flight RPCs may finish within this when the server stops
BATCHING_THREADS = 16  # suggested --threads for dynamic batching


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rootstream-serve", description="Serve the ONNX models of a directory over HTTP."
    )
    parser.add_argument("--models", required=True, help="model repository: NAME/VERSION/model.onnx")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    parser.add_argument(
        "--grpc-port", type=int, default=None, help="also serve gRPC on this port (0: any free)"
    )
    parser.add_argument("--workers", type=int, default=1, help="processes; >1 runs gunicorn")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="requests each gunicorn worker answers at once: 1 (sync workers, the lowest "
        f"latency) unless models batch dynamically (then e.g. {BATCHING_THREADS})",
    )
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
    for option in ("workers", "threads"):
        if getattr(args, option) < 1:
            print(f"rootstream-serve: error: --{option} must be at least 1", file=sys.stderr)
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
        serial=args.workers > 1 and args.threads == 1,  # gunicorn sync workers
    )
    ModelStore(config.models).clean()
    reservations = []  # the ports the processes join with SO_REUSEPORT, held until the end
    try:
        grpc_address = None
        if args.grpc_port is not None:
            reservations.append(_reserve_port(args.host, args.grpc_port, "--grpc-port"))
            grpc_address = _address(args.host, reservations[-1])
        if args.workers > 1:
            port = args.port
            if args.threads > 1:  # a listening socket per worker (SO_REUSEPORT)
                reservations.append(_reserve_port(args.host, args.port, "--port"))
                port = reservations[-1].getsockname()[1]
            _serve_gunicorn(config, args.host, port, (args.workers, args.threads), grpc_address)
        else:
            _serve_werkzeug(config, args.host, args.port, grpc_address)
    finally:
        for reservation in reservations:
            reservation.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _reserve_port(host: str, port: int, option: str) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: a free one), not listening: bound without
    ``SO_REUSEPORT``, so the port is free of any other socket, then given it, so that the
    servers of this server's processes can bind the port too (``option`` names it in
    errors)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reservation = socket.socket(family, socket.SOCK_STREAM)
    try:
        reservation.bind((host, port))
    except OSError as err:
        reservation.close()
        raise SystemExit(f"rootstream-serve: error: cannot use {option} {port}: {err}") from None
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return reservation


def _address(host: str, reservation: socket.socket) -> str:
    port = reservation.getsockname()[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ready(host: str, port: int, workers: int, config: Any, grpc_address: str | None) -> None:
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    log.info(
        "listening on %s",
        url if grpc_address is None else f"{url} and grpc://{grpc_address}",
        extra={
            "fields": {
                "url": url,
                "grpc": grpc_address,
                "workers": workers,
                "models": str(config.models),
                "threads": config.threads,
                "auth": config.token is not None,
            }
        },
    )


def _serve_werkzeug(config: Any, host: str, port: int, grpc_address: str | None) -> None:
    from werkzeug.serving import make_server

    from serving.app import create_app

    app = create_app(config)
    server = make_server(host, port, app, threaded=True)
    grpc_server = None if grpc_address is None else _start_grpc(app, grpc_address)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    _ready(host, server.port, 1, config, grpc_address)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if grpc_server is not None:
            grpc_server.stop(GRPC_GRACE_SECONDS).wait()


def _start_grpc(app: Any, address: str) -> Any:
    from serving.grpcserver import start_grpc_server

    return start_grpc_server(app, address)


def _serve_gunicorn(
    config: Any, host: str, port: int, concurrency: tuple[int, int], grpc_address: str | None
) -> None:
    """Serve with gunicorn: ``concurrency`` is (worker processes, threads per worker); with
    threads, ``port`` is reserved and each worker listens on it with a socket of its own."""
    workers, threads = concurrency
    from gunicorn.app.base import BaseApplication
    from prometheus_client import multiprocess

    grpc_servers: list[Any] = []  # this process's gRPC server (in a worker, after fork)

    def post_worker_init(worker: Any) -> None:
        if worker.age == 1:  # the first worker serves: its app and gRPC server are up
            port = worker.sockets[0].getsockname()[1]
            _ready(host, port, workers, config, grpc_address)

    def child_exit(server: Any, worker: Any) -> None:
        multiprocess.mark_process_dead(worker.pid)

    def worker_exit(server: Any, worker: Any) -> None:
        for grpc_server in grpc_servers:
            grpc_server.stop(GRPC_GRACE_SECONDS).wait()

    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "reuse_port": threads > 1,  # a listening socket per worker: the kernel spreads them
        "workers": workers,
        # concurrent requests in a worker, so that its batchers can merge them
        "worker_class": "gthread" if threads > 1 else "sync",
        "threads": threads,
        "timeout": 120,
        "graceful_timeout": 10,
        "loglevel": "warning",
        "preload_app": False,  # each worker creates its app, and its sessions, after fork
        "post_worker_init": post_worker_init,
        "child_exit": child_exit,
        "worker_exit": worker_exit,
        "control_socket_disable": True,  # gunicorn 27 opens one at a fixed path for all servers
    }

    class Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:  # older gunicorn lacks control_socket_disable
                    self.cfg.set(key, value)

        def load(self) -> Any:  # in each worker: onnxruntime imported before fork hangs at exit
            from serving.app import create_app

            app = create_app(config)
            if grpc_address is not None:  # grpc, too, must start after fork
                grpc_servers.append(_start_grpc(app, grpc_address))
            return app

    Server().run()


if __name__ == "__main__":
    sys.exit(main())
