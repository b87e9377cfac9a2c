"""Starting and stopping `kiln serve` for the serve tests: always on a loopback port the kernel
picks (--port 0, read back from the server's "listening on" line), always stopped at the end."""
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx

from conftest import kiln_bin, sanitizer_env

SANITIZED = os.environ.get("KILN_SANITIZED") == "1"
# Generous: the machine is two shared cores, and a sanitizer build is several times slower.
START_TIMEOUT = 120 if SANITIZED else 60


def wait_for(cond, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Server:
    def __init__(self, offering, *args, env=None, wait=True):
        e = sanitizer_env(env)
        self.lines = []
        self.proc = subprocess.Popen([str(kiln_bin()), "serve", str(offering), "--port", "0",
                                      *map(str, args)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=e)
        self._listening = threading.Event()
        self.port = None
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if not self._listening.wait(START_TIMEOUT):
            self.kill()
            raise AssertionError("kiln serve did not start listening:\n" + self.log())
        if self.port is None:
            self.kill()
            raise AssertionError("kiln serve exited:\n" + self.log())
        self.url = f"http://127.0.0.1:{self.port}"
        if wait:
            self.wait_ready()

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            m = re.search(r"listening on http://\S+:(\d+) ", line)
            if m:
                self.port = int(m.group(1))
                self._listening.set()
        self._listening.set()

    def log(self):
        return "\n".join(self.lines)

    def health(self):
        try:
            return httpx.get(self.url + "/health", timeout=10)
        except httpx.HTTPError:
            return None

    def wait_ready(self, timeout=START_TIMEOUT):
        end = time.time() + timeout
        while time.time() < end:
            r = self.health()
            if r is not None and r.status_code == 200:
                return r
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("kiln serve never became ready:\n" + self.log())

    def metrics(self):
        return httpx.get(self.url + "/metrics", timeout=10).text

    def metric(self, name):
        """The value of an unlabelled sample, or the sum of a labelled family."""
        total, seen = 0.0, False
        for line in self.metrics().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
                seen = True
        assert seen, f"/metrics has no {name}"
        return total

    def worker_pids(self):
        """The supervisor's children (the worker) from /proc."""
        pids = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                pass
        return pids

    def worker_pid(self, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            pids = self.worker_pids()
            if pids:
                return pids[0]
            time.sleep(0.05)
        raise AssertionError("no worker process")

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("kiln serve did not stop after a signal:\n" + self.log())
        return self.proc.returncode

    def kill(self):
        for pid in self.worker_pids() if self.proc.poll() is None else []:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
