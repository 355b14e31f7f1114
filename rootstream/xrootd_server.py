"""A real XRootD server on loopback over a local folder, for demos, benchmarks and tests.

Runs Debian's ``xrootd`` (package ``xrootd-server``); nothing here is needed to *read*
``root://`` URLs, only to serve files locally.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["XROOTD", "XRootDServer", "free_port"]

XROOTD = shutil.which("xrootd")
START_TIMEOUT_S = 15.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class XRootDServer:
    """``xrootd`` serving ``data`` at ``root://127.0.0.1:<port>//<name>``.

    xrootd 5.5 cannot bind one address: it listens on every interface but, through
    ``xrd.allow host localhost``, accepts connections from loopback only. As root it
    runs as ``nobody`` (it refuses to run as root), so its directories are made theirs.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data, self.run = root / "data", root / "run"
        self.data.mkdir(parents=True)
        self.run.mkdir()
        self.port = free_port()
        self.config = root / "xrd.cfg"
        self.config.write_text(
            f"all.export /\noss.localroot {self.data}\nall.adminpath {self.run}\n"
            f"all.pidpath {self.run}\nxrd.allow host localhost\n"
        )
        root.chmod(0o755)
        if os.geteuid() == 0:
            for path in (self.data, self.run):
                shutil.chown(path, "nobody")
        self.process: subprocess.Popen | None = None

    def url(self, name: str = "") -> str:
        """The ``root://`` URL of a file of the served folder."""
        return f"root://127.0.0.1:{self.port}//{name}"

    def add(self, path: str | Path, name: str | None = None) -> str:
        """Copy a local file into the served directory; return its URL."""
        target = self.data / (name or Path(path).name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        target.chmod(0o644)
        return self.url(str(target.relative_to(self.data)))

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        user = ["-R", "nobody"] if os.geteuid() == 0 else []
        command = [XROOTD, *user, "-c", str(self.config), "-p", str(self.port)]
        command += ["-n", "rootstream", "-l", str(self.run / "xrootd.log")]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _accepts(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"xrootd did not start on port {self.port}:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill the server (as a crash would) and wait for it."""
        if self.process is not None:
            self.process.kill()
            self.process.communicate()
            self.process = None

    def log(self) -> str:
        """The end of the server's log (for error messages)."""
        logs = sorted(self.run.rglob("xrootd.log*"))
        return logs[-1].read_text(errors="replace")[-3000:] if logs else "(no log)"
