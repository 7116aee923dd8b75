"""Placement planning: which GPU each engine and learner rank gets, and refusals that say what
is missing."""

import pytest

from rlvr.cluster.placement import PlacementError, Slot, plan_placement, required_gpus


def slots(plan):
    return [s for e in plan.engines for s in e], plan.learners


def test_disaggregated_one_node():
    plan = plan_placement("disaggregated", engines=2, tp=2, learners=4, node_gpus=[8])
    engine_slots, learner_slots = slots(plan)
    assert [[s.gpu for s in e] for e in plan.engines] == [[0, 1], [2, 3]]
    assert [s.gpu for s in learner_slots] == [4, 5, 6, 7]
    assert not set(engine_slots) & set(learner_slots)
    assert plan.gpus_used == 8


def test_disaggregated_keeps_tp_groups_on_one_node():
    # two 4-GPU nodes, 3 engines of TP 2 and 2 learners: best fit packs engines 0 and 1 on node 0
    plan = plan_placement("disaggregated", 3, 2, 2, node_gpus=[4, 4])
    assert all(len({s.node for s in e}) == 1 for e in plan.engines)
    assert [e[0].node for e in plan.engines] == [0, 0, 1]
    assert plan.learners == [Slot(1, 2), Slot(1, 3)]


def test_cpu_only_head_node_is_skipped():
    plan = plan_placement("disaggregated", 1, 1, 1, node_gpus=[0, 2])
    assert plan.engines == [[Slot(1, 0)]] and plan.learners == [Slot(1, 1)]


def test_colocated_shares_each_gpu():
    plan = plan_placement("colocated", engines=4, tp=2, learners=8, node_gpus=[8, 8])
    engine_slots, learner_slots = slots(plan)
    assert learner_slots == engine_slots  # learner rank r on the GPU of vLLM worker r
    assert plan.gpus_used == 8
    assert (
        required_gpus("colocated", 4, 2, 8) == 8 and required_gpus("disaggregated", 4, 2, 8) == 16
    )


@pytest.mark.parametrize("gpus, ok", [([1], False), ([2], True), ([8], True), ([1, 1], True)])
def test_smallest_disaggregated_run(gpus, ok):
    if ok:
        assert plan_placement("disaggregated", 1, 1, 1, gpus).gpus_used == 2
    else:
        with pytest.raises(PlacementError, match="needs 2 GPUs .* has 1 on 1 node.*: 1 missing"):
            plan_placement("disaggregated", 1, 1, 1, gpus)


def test_refusal_counts_what_is_missing():
    with pytest.raises(
        PlacementError,
        match=r"needs 12 GPUs \(4 engine\(s\) x TP 2 \+ 4 learner.*has 8 .*4 missing",
    ):
        plan_placement("disaggregated", 4, 2, 4, [8])


def test_tp_larger_than_any_node():
    with pytest.raises(
        PlacementError,
        match="tensor_parallel_size=8 needs 8 GPUs on one node; the largest node has 4",
    ):
        plan_placement("disaggregated", 1, 8, 1, [4, 4, 4])


def test_fragmented_nodes_refuse_an_engine():
    # 3 + 3 GPUs hold 6 GPUs in all, but two TP-2 engines leave 1 + 1: a third cannot be placed
    with pytest.raises(PlacementError, match="engine 2 of 3 needs 2 free GPUs on one node"):
        plan_placement("colocated", 3, 2, 6, [3, 3])


def test_colocated_needs_one_learner_per_vllm_gpu():
    with pytest.raises(PlacementError, match="learner.num_workers=4 must equal .* 2 x 4 = 8"):
        plan_placement("colocated", 2, 4, 4, [8])


def test_unknown_mode_and_bad_counts():
    with pytest.raises(PlacementError, match="choose one of: disaggregated, colocated"):
        plan_placement("spread", 1, 1, 1, [8])
    with pytest.raises(PlacementError, match="at least one engine"):
        plan_placement("disaggregated", 0, 1, 1, [8])
