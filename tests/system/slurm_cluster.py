"""A real single-node SLURM cluster on this machine, for testing the sbatch templates.

Installs `slurm-wlm` and `munge` with apt when missing (idempotent, bounded), then runs munged,
slurmctld and slurmd in the foreground as children of the test process, with every file (config,
munge key and socket, state, spool, logs, pid files) under one temporary directory and free TCP
ports, so nothing on the machine is touched and nothing clashes with another cluster. Teardown
cancels the cluster's jobs and stops exactly the daemons it started, by process id.

Needs root (slurmd launches jobs as their submitting user, and munged/slurmd check ownership).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import free_port

BINARIES = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "sinfo", "squeue")
APT_PACKAGES = ("slurm-wlm", "munge")
TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                   "DEADLINE", "PREEMPTED"}


class ClusterError(RuntimeError):
    pass


def unavailable_reason() -> str | None:
    """Why a cluster cannot be started here (for pytest.skip), or None."""
    if not sys.platform.startswith("linux"):
        return f"SLURM cluster test needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return ("SLURM cluster test needs root to install slurm-wlm/munge and run slurmctld, slurmd and "
                "munged (CI runs as root)")
    if not all(shutil.which(b) for b in BINARIES) and not shutil.which("apt-get"):
        return "slurm-wlm/munge are not installed and apt-get is not available to install them"
    return None


def ensure_installed(timeout: float = 600) -> None:
    """apt-get install slurm-wlm munge unless every binary is already there. Raises on failure:
    on a root machine with apt (CI) a failed install is an error, not a reason to skip."""
    if all(shutil.which(b) for b in BINARIES):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    deadline = time.monotonic() + timeout
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=120",
                 *APT_PACKAGES]):
        try:
            proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True,
                                  timeout=max(10.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise ClusterError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f}s") from None
        if proc.returncode:
            raise ClusterError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n"
                               f"{proc.stderr[-2000:]}")
    missing = [b for b in BINARIES if not shutil.which(b)]
    if missing:
        raise ClusterError(f"installed {' '.join(APT_PACKAGES)} but {missing} are still not on PATH")


def node_hardware() -> str:
    """`slurmd -C`'s CPU topology for this machine (without RealMemory, which CR_CPU ignores and
    which would drain the node if it moved below the configured value)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=60, check=True).stdout
    line = out.splitlines()[0]
    fields = [f for f in line.split() if f.split("=")[0] in
              ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")]
    if not any(f.startswith("CPUs=") for f in fields):
        raise ClusterError(f"cannot parse `slurmd -C`: {out!r}")
    return " ".join(fields)


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 90) -> None:
        munge_dir, sock_dir = self.root / "munge", self.root / "munge-socket"
        for d in (munge_dir, sock_dir, self.root / "state", self.root / "spool", self.root / "log"):
            d.mkdir(parents=True, exist_ok=True)
        munge_dir.chmod(0o700)
        sock_dir.chmod(0o755)  # munged insists that clients can reach the socket
        key = munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self.socket = sock_dir / "munge.sock"
        self._spawn("munged", ["munged", "--foreground", "--force", f"--socket={self.socket}",
                               f"--key-file={key}", f"--pid-file={munge_dir / 'munged.pid'}",
                               f"--seed-file={munge_dir / 'seed'}",
                               f"--log-file={self.root / 'log' / 'munged.log'}"])
        self._wait(lambda: self.socket.exists(), 20, "munged socket")
        self.conf.write_text(self._config())
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._wait(lambda: self.run(["scontrol", "ping"], check=False).returncode == 0, 30, "slurmctld ping")
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.node])
        self._wait(self._node_idle, timeout, f"node {self.node} idle")

    def _config(self) -> str:
        r = self.root
        return f"""\
# Written by tests/system/slurm_cluster.py: a one-node cluster confined to {r}
ClusterName=megamerge-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
MpiDefault=none
# No cgroups in a container: track processes by parentage, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Schedule within seconds of a submission, a requeue or an end (defaults are 30-60 s).
SchedulerParameters=sched_interval=2,bf_interval=1
ReturnToService=2
JobRequeue=1
# Keep finished jobs visible to `scontrol show job` (there is no accounting database).
MinJobAge=3600
KillWait=30
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
NodeName={self.node} NodeAddr=127.0.0.1 {node_hardware()} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""

    def _spawn(self, name: str, cmd: list[str]) -> None:
        with open(self.root / "log" / f"{name}.stdout", "w") as out:
            self.procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                                start_new_session=True)

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise ClusterError(f"{name} exited with {proc.returncode} while waiting for {what}\n"
                                       + self.diagnostics())
            if ready():
                return
            time.sleep(0.5)
        raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}\n" + self.diagnostics())

    def _node_idle(self) -> bool:
        out = self.run(["sinfo", "-h", "-n", self.node, "-o", "%t"], check=False).stdout.strip()
        return out == "idle"

    def stop(self, timeout: float = 30) -> list[str]:
        """Cancel the cluster's jobs, then stop the daemons this object started, by pid.
        Returns the names of daemons that had to be SIGKILLed."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            jobs = self.run(["squeue", "-h", "-o", "%i"], check=False).stdout.split()
            if jobs:
                self.run(["scancel", *jobs], check=False)
                deadline = time.monotonic() + timeout
                while (time.monotonic() < deadline
                       and self.run(["squeue", "-h", "-o", "%i"], check=False).stdout.strip()):
                    time.sleep(1)
        killed = []
        for name in ("slurmd", "slurmctld", "munged"):  # reverse start order
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                killed.append(name)
        return killed

    # -- client side ----------------------------------------------------------------------------

    def run(self, cmd: list[str], check: bool = True, timeout: float = 60,
            **kw) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, check=False, env=kw.pop("env", self.env), capture_output=True, text=True,
                              timeout=timeout, **kw)
        if check and proc.returncode:
            raise ClusterError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): "
                               f"{proc.stdout}{proc.stderr}")
        return proc

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job -o` as a dict (JobState, Restarts, Reason, ExitCode, ...)."""
        out = self.run(["scontrol", "show", "job", "-o", str(job_id)]).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait_for_job(self, job_id: str, timeout: float, on_poll=None) -> dict[str, str]:
        """Poll until the job reaches a terminal state (REQUEUED/PENDING are not terminal)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info.get("JobState") in TERMINAL_STATES:
                return info
            if time.monotonic() > deadline:
                raise ClusterError(f"job {job_id} still {info.get('JobState')} after {timeout:.0f}s: {info}")
            if on_poll:
                on_poll(info)
            time.sleep(1)

    def diagnostics(self, lines: int = 40) -> str:
        parts = []
        for log in sorted((self.root / "log").glob("*")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name} (last {lines} lines) ---\n" + "\n".join(text))
        return "\n".join(parts)
