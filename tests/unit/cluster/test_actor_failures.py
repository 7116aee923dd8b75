"""How a failed wait on the actors becomes an error: which actor died, and whether the run can
restart (ActorFailure) or not (PipelineError). Ray's own exception classes, no Ray session."""

import pytest
import ray
import ray.exceptions as rex

from rlvr.cluster.ray_cluster import Cluster, death_cause, is_communication_error
from rlvr.errors import ActorFailure, PipelineError

DEATH = (
    "The actor died unexpectedly before finishing this task.\n\tclass_name: RolloutWorker\n"
    "\tpid: 123\nThe actor is dead because its worker process has died. Worker exit type: "
    "UNEXPECTED_SYSTEM_EXIT Worker exit detail: Worker unexpectedly exits with a connection "
    "error code 2. End of file. Some common causes include: (1) the process was killed by the OOM"
)


def cluster(dead: list[str]) -> Cluster:
    """A Cluster without actors whose liveness check reports `dead` by name."""
    c = object.__new__(Cluster)
    c.timeout, c.workers, c.learners = 7.0, ["w0", "w1"], ["l0"]
    c.dead_actors = lambda: [(n, rex.RayActorError(error_msg=DEATH)) for n in dead]
    return c


def failing(monkeypatch, exc):
    def get(refs, timeout):
        raise exc

    monkeypatch.setattr(ray, "get", get)


def task_error(cause: BaseException) -> rex.RayTaskError:
    return rex.RayTaskError("send_weights", "Traceback ...", cause)


# how Ray's death message reads once it is one line (the cause both tests below expect)
CAUSE = (
    "its worker process has died. Worker exit type: UNEXPECTED_SYSTEM_EXIT Worker exit detail: "
    "Worker unexpectedly exits with a connection error code 2. End of file"
)


def test_a_dead_worker_is_named_with_its_cause(monkeypatch):
    failing(monkeypatch, rex.RayActorError(error_msg=DEATH))
    with pytest.raises(ActorFailure) as err:
        cluster(["rollout worker 1"]).get([], "generation")
    assert str(err.value) == f"generation: rollout worker 1 died ({CAUSE})"


def test_a_survivors_gloo_error_names_the_dead_peer(monkeypatch):
    """A worker that died while idle: the learner's send fails first, with a raw gloo string."""
    gloo = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed")
    failing(monkeypatch, task_error(gloo))
    with pytest.raises(ActorFailure) as err:
        cluster(["rollout worker 0"]).get([], "sending weights")
    assert str(err.value) == f"sending weights: rollout worker 0 died ({CAUSE})"


def test_a_sync_group_failure_without_a_death_restarts_too(monkeypatch):
    gloo = RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 900000ms")
    failing(monkeypatch, task_error(gloo))
    with pytest.raises(ActorFailure) as err:
        cluster([]).get([], "receiving weights")
    assert str(err.value).startswith("receiving weights: the weight-sync group failed (")


class Actor:
    """An actor handle and the refs of its calls, as far as `Cluster.unanswered` reads them."""

    def __init__(self, actor_id: str):
        self._actor_id = actor_id

    def call(self):
        task = type("Task", (), {"actor_id": lambda _: self._actor_id})()
        return type("Ref", (), {"task_id": lambda _: task})()


def test_a_hang_names_the_actors_that_did_not_answer(monkeypatch):
    c = cluster([])
    c.workers, c.learners = [Actor("w0"), Actor("w1")], [Actor("l0"), Actor("l1")]
    refs = [a.call() for a in c.workers + c.learners]
    failing(monkeypatch, rex.GetTimeoutError())
    monkeypatch.setattr(ray, "wait", lambda r, num_returns, timeout: (r[:1], [r[3], r[1], r[3]]))
    with pytest.raises(ActorFailure) as err:
        c.get(refs, "learner update")
    assert str(err.value) == (
        "learner update: no answer within trainer.actor_timeout_s=7 s from learner rank 1, "
        "rollout worker 1"
    )


def test_a_hang_restarts_and_a_bug_does_not(monkeypatch):
    failing(monkeypatch, rex.GetTimeoutError())
    with pytest.raises(ActorFailure) as err:
        cluster([]).get([], "learner update")
    assert str(err.value) == "learner update: no answer within trainer.actor_timeout_s=7 s"
    failing(monkeypatch, task_error(ValueError("bad shape")))
    with pytest.raises(PipelineError) as err:
        cluster([]).get([], "learner update")
    assert not isinstance(err.value, ActorFailure)
    assert str(err.value) == "learner update: ValueError: bad shape"


def test_death_cause_and_communication_errors():
    assert death_cause(RuntimeError("first line\nsecond")) == "first line"
    assert is_communication_error(RuntimeError("NCCL error: unhandled system error"))
    assert not is_communication_error(ValueError("index out of range"))


@pytest.mark.parametrize("address", [None, "10.0.0.9:6379"])
def test_ray_start_failure_is_one_line(monkeypatch, address):
    """Ray's node start-up timeout (seen on a loaded machine) names what failed in one line."""
    from types import SimpleNamespace

    from rlvr.cluster import ray_cluster

    def init(**kwargs):
        raise Exception(
            "The current node timed out during startup. This could happen because some of the "
            "Ray processes failed to startup.\n  File ...\nmore lines"
        )

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray_cluster, "tag_and_watch", lambda: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = SimpleNamespace(
        ray=SimpleNamespace(address=address, num_cpus=2),
        learner=SimpleNamespace(num_workers=1, cpus_per_worker=1.0),
        rollout=SimpleNamespace(num_workers=1, cpus_per_worker=1.0),
    )
    with pytest.raises(PipelineError) as info:
        ray_cluster.init_ray(cfg, log=lambda *a: None)
    what = f"cannot join Ray at {address}" if address else "local Ray did not start"
    assert str(info.value) == (
        f"{what}: Exception: The current node timed out during startup. This could happen "
        "because some of the Ray processes failed to startup."
    )
