"""The controller's vLLM side (rlvr.cluster.vllm_cluster) with fake Ray actors: placement refused
before any actor starts, the colocated sleep/offload/wake/send order, and fingerprint failures."""

import pytest

from rlvr.cluster.placement import PlacementError
from rlvr.cluster.ray_cluster import check_fingerprints
from rlvr.cluster.vllm_cluster import VLLMCluster
from rlvr.config import load_config
from rlvr.errors import PipelineError
from rollout.vllm_engine import engine_kwargs

BASE = ["rollout.engine=vllm", "learner.gpus_per_worker=1", "learner.zero_stage=2"]


class FakeRay:
    def __init__(self, gpus_per_node):
        self.gpus = gpus_per_node

    def nodes(self):
        return [{"Alive": True, "Resources": {"GPU": g}} for g in self.gpus] + [
            {"Alive": False, "Resources": {"GPU": 8}}
        ]


class Actor:
    """Methods record (actor, method, args), return what `answers` says; `.remote` runs at once."""

    def __init__(self, name, log, answers):
        self.name, self.log, self.answers = name, log, answers

    def __getattr__(self, method):
        actor = self

        class Method:
            @staticmethod
            def remote(*args):
                key = args[0] if method == "engine_call" else method
                actor.log.append((actor.name, key, args[1:] if method == "engine_call" else args))
                answer = actor.answers.get(key)
                return answer(actor) if callable(answer) else answer

        return Method()


def make(overrides, gpus, answers):
    cfg = load_config(None, BASE + overrides)
    log = []
    cluster = VLLMCluster(
        cfg, "/m", FakeRay(gpus), get=lambda refs, what: refs, log=lambda *a: None
    )
    workers = [Actor(f"w{i}", log, answers) for i in range(cfg.rollout.num_workers)]
    learners = [Actor(f"l{r}", log, answers) for r in range(cfg.learner.num_workers)]
    return cluster, workers, learners, log


def test_placement_is_refused_before_any_actor():
    with pytest.raises(PlacementError, match="needs 8 GPUs .* has 6 on 2 node.*2 missing"):
        load = load_config(None, BASE + ["rollout.num_workers=4", "learner.num_workers=4"])
        VLLMCluster(load, "/m", FakeRay([4, 2]), get=None)


def test_colocated_step_order_and_fingerprints():
    answers = {
        "send_weights": lambda a: {"bytes": 10, "fingerprint": "fp"} if a.name == "l0" else {},
        "after_sync": lambda a: ["fp", "fp"],
    }
    cluster, workers, learners, log = make(
        [
            "placement.mode=colocated",
            "rollout.num_workers=2",
            "rollout.vllm.tensor_parallel_size=2",
            "learner.num_workers=4",
        ],
        [4],
        answers,
    )
    setup = cluster.setup()
    assert setup.transfer_backend == "ipc" and setup.enable_sleep_mode
    assert cluster.cfg.rollout.vllm.seed == 0 and setup.max_model_len == 1024 + 8
    # engine i seeds with rollout.vllm.seed + i
    assert engine_kwargs("/m", cluster.cfg.rollout.vllm, setup, engine_index=1)["seed"] == 1
    cluster.asleep = True  # as start() leaves it
    sent, received = cluster.sync_weights(workers, learners)
    assert sent["fingerprint"] == "fp" and received == [["fp", "fp"], ["fp", "fp"]]
    assert check_fingerprints(sent["fingerprint"], received) == 4  # every TP worker compared
    order = [(who[0], what) for who, what, _ in log]
    assert (
        order
        == [("l", "offload_states")] * 4
        + [("w", "wake_up")] * 2
        + [("l", "send_weights")] * 4
        + [("w", "after_sync")] * 2
    )
    assert log[4][2] == (["weights"],)
    log.clear()
    cluster.before_update(workers)
    cluster.before_update(workers)  # already asleep: no second sleep
    assert log == [("w0", "sleep", (1,)), ("w1", "sleep", (1,))]


def test_disaggregated_sync_checks_every_worker():
    answers = {
        "send_weights": lambda a: {"bytes": 10, "fingerprint": "fp"} if a.name == "l0" else {},
        "after_sync": lambda a: ["fp", "bad"] if a.name == "w1" else ["fp", "fp"],
    }
    cluster, workers, learners, log = make(
        ["rollout.num_workers=2", "rollout.vllm.tensor_parallel_size=2", "learner.num_workers=2"],
        [8],
        answers,
    )
    assert cluster.setup().transfer_backend == "nccl" and not cluster.setup().enable_sleep_mode
    sent, received = cluster.sync_weights(workers, learners)
    with pytest.raises(
        PipelineError,
        match=r"rollout worker 1 fingerprint bad != learner fp \(vLLM worker\(s\) \[1\] of 2\)",
    ):
        check_fingerprints(sent["fingerprint"], received)
    assert [what for _, what, _ in log] == [
        "send_weights",
        "send_weights",
        "after_sync",
        "after_sync",
    ]
    cluster.before_update(workers)  # disaggregated engines never sleep
    assert [what for _, what, _ in log][-1] == "after_sync"
