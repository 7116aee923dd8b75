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
    # max_prompt_tokens + max_new_tokens = 1024 + 8, within the built-in model's 64 positions
    assert cluster.cfg.rollout.vllm.seed == 0 and setup.max_model_len == 64
    assert setup.device == "cuda"
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
    # level 2: the weights are about to be replaced by the sync after the update
    assert log == [("w0", "sleep", (2,)), ("w1", "sleep", (2,))]
    log.clear()
    cluster.sync_weights(workers, learners)  # wakes them
    with cluster.asleep_for_checkpoint(workers):  # the learner reloads optimizer state to save
        log.append(("driver", "save", ()))
    assert [(who, what, args) for who, what, args in log[-5:]] == [
        ("w0", "sleep", (1,)),  # level 1: the weights stay valid
        ("w1", "sleep", (1,)),
        ("driver", "save", ()),
        ("w0", "wake_up", (None,)),
        ("w1", "wake_up", (None,)),
    ]
    assert not cluster.asleep


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


class ActorClass:
    """A fake `ray.remote(cls)`: `.options(**o).remote(*a, **kw)` records and returns an Actor."""

    def __init__(self, kind, log, answers):
        self.kind, self.log, self.answers, self.made = kind, log, answers, []

    def options(self, **options):
        cls = self

        class Bound:
            @staticmethod
            def remote(*args, **kwargs):
                actor = Actor(f"{cls.kind}{len(cls.made)}", cls.log, cls.answers)
                cls.made.append((options, args, kwargs))
                return actor

        return Bound()


class FakeGroup:
    def __init__(self, bundles):
        self.bundles = bundles

    def ready(self):
        return "ready"


def test_colocated_start_gives_each_engine_its_learners_gpus(monkeypatch):
    """Two engines x TP 2 over 4 learner ranks on GPUs 3, 5, 6, 7: engine 0 must see '3,5'
    (each rank reports ray.get_gpu_ids(), a list), not '[3],[5]'."""
    from rlvr.cluster import vllm_cluster

    gpus = {"l0": [3], "l1": [5], "l2": [6], "l3": [7]}
    answers = {"gpu_ids": lambda a: gpus[a.name], "ready": 1}
    monkeypatch.setattr(
        vllm_cluster,
        "placement_api",
        lambda: (FakeGroup, lambda **kw: ("in", kw["placement_group"])),
    )
    cluster, _, _, log = make(
        [
            "placement.mode=colocated",
            "rollout.num_workers=2",
            "rollout.vllm.tensor_parallel_size=2",
            "learner.num_workers=4",
        ],
        [8],
        answers,
    )
    worker_cls, learner_cls = ActorClass("w", log, answers), ActorClass("l", log, answers)
    workers, learners = cluster.start(worker_cls, learner_cls)
    assert len(workers) == 2 and len(learners) == 4
    visible = [kw["cuda_visible_devices"] for _, _, kw in worker_cls.made]
    assert visible == ["3,5", "6,7"]
    # the engines share their learners' bundles and take no GPU of their own in Ray's books
    assert [o["num_gpus"] for o, _, _ in worker_cls.made] == [0, 0]
    groups = [o["scheduling_strategy"][1] for o, _, _ in learner_cls.made]
    assert groups[0] is groups[1] is cluster.groups[0] and groups[2] is cluster.groups[1]
    assert [w for _, w, _ in log][-2:] == ["sleep", "sleep"] and cluster.asleep


def test_cpu_start_needs_no_gpus():
    answers = {"ready": 1}
    cluster, _, _, log = make(
        ["learner.gpus_per_worker=0", "rollout.num_workers=2", "learner.num_workers=2"],
        [],  # a CPU-only Ray cluster: no placement plan is made
        answers,
    )
    assert cluster.backend == "gloo" and cluster.plan is None
    setup = cluster.setup()
    assert setup.device == "cpu" and setup.transfer_backend == "gloo"
    assert not setup.enable_sleep_mode and setup.dtype == "float32"
    worker_cls, learner_cls = ActorClass("w", log, answers), ActorClass("l", log, answers)
    cluster.start(worker_cls, learner_cls)
    assert [o["num_gpus"] for o, _, _ in worker_cls.made + learner_cls.made] == [0] * 4
    assert all(kw["threads"] == 1 for _, _, kw in worker_cls.made + learner_cls.made)
    assert not cluster.asleep  # CPU engines never sleep
