"""Weight-sync wire format: bucket plans, fingerprints, a real gloo transfer between processes."""

import multiprocessing as mp

import torch

from rollout.weight_sync import (
    ParamSpec,
    SyncGroup,
    fingerprint,
    make_manifest,
    plan_buckets,
    receive_buckets,
    send_buckets,
)


def specs(*sizes, dtype="float32"):
    return [ParamSpec(f"p{i}", (n,), dtype) for i, n in enumerate(sizes)]


def test_bucket_plan_by_hand():
    # float32: 10, 10, 30, 5, 20 elements = 40, 40, 120, 20, 80 bytes; buckets of 100 bytes:
    # [40+40=80] then 120 alone (too big for any bucket), then [20+80=100]
    assert plan_buckets(specs(10, 10, 30, 5, 20), 100) == [[0, 1], [2], [3, 4]]
    # a dtype change always starts a new bucket
    mixed = specs(2, 2) + [ParamSpec("h", (2,), "bfloat16")]
    assert plan_buckets(mixed, 1000) == [[0, 1], [2]]
    assert make_manifest([("w", (2, 3), torch.float32)]) == [ParamSpec("w", (2, 3), "float32")]
    assert ParamSpec("w", (2, 3), "bfloat16").nbytes == 12


def test_fingerprint_detects_changes_and_swaps():
    a = [("x", torch.tensor([1.0, 2.0, 3.0])), ("y", torch.ones(2, 2))]
    base = fingerprint(a)
    assert fingerprint(list(reversed(a))) == base  # order of iteration does not matter
    assert fingerprint([("x", torch.tensor([1.0, 2.0, 3.0001])), a[1]]) != base
    assert fingerprint([("x", torch.tensor([2.0, 1.0, 3.0])), a[1]]) != base  # same sum, swapped
    assert fingerprint([("z", a[0][1]), a[1]]) != base  # renamed
    assert fingerprint([("x", a[0][1]), ("y", torch.ones(4))]) != base  # reshaped


def _member(rank, world, port_q, out_q, corrupt_bucket):
    torch.manual_seed(0)
    manifest = specs(7, 300, 5, 1000)
    plan = plan_buckets(manifest, 1024)
    if rank == 0:
        store = SyncGroup.create_store("127.0.0.1", world, 30)
        for _ in range(world - 1):
            port_q.put(store.port)
        group = SyncGroup("127.0.0.1", store.port, 0, world, "gloo", 30, store=store)
        tensors = [torch.randn(s.shape) for s in manifest]
        sent, digest = send_buckets(group, manifest, plan, iter(tensors), torch.device("cpu"))
        out_q.put((0, sent, digest, fingerprint(zip([s.name for s in manifest], tensors))))
        return
    group = SyncGroup("127.0.0.1", port_q.get(), rank, world, "gloo", 30)
    got = {}

    def corrupt(b, flat):
        if rank == 2 and b == corrupt_bucket:
            flat[3] += 0.5

    received = receive_buckets(
        group,
        manifest,
        plan,
        torch.device("cpu"),
        lambda views: got.update({n: t.clone() for n, t in views}),
        corrupt,
    )
    out_q.put((rank, received, fingerprint(got.items()), None))


def test_gloo_transfer_to_two_workers_and_corruption_is_caught():
    ctx = mp.get_context("spawn")
    port_q, out_q = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_member, args=(r, 3, port_q, out_q, 1)) for r in range(3)]
    for p in procs:
        p.start()
    results = {r: rest for r, *rest in (out_q.get(timeout=120) for _ in procs)}
    for p in procs:
        p.join(timeout=60)
    sent, digest, direct = results[0]
    assert sent == (7 + 300 + 5 + 1000) * 4 and digest == direct
    assert results[1][0] == sent and results[1][1] == digest  # intact copy
    assert results[2][0] == sent and results[2][1] != digest  # damaged bucket 1 is detected


def test_fingerprint_is_exact_whatever_the_summation_order(monkeypatch):
    import rollout.weight_sync as ws

    t = [("w", torch.randn(1000, dtype=torch.float64) * 1e6), ("b", torch.randn(37).bfloat16())]
    whole = fingerprint(t)
    monkeypatch.setattr(ws, "DIGEST_CHUNK", 7)  # a different split of the integer sums
    assert fingerprint(t) == whole
    # 16-bit words by hand: 1.0f = 0x3F800000 -> words (0x0000, 0x3F80) at positions 0 and 1
    name, shape, dtype, plain, weighted = ws.tensor_digest("one", torch.tensor([1.0]))
    assert (shape, dtype, plain, weighted) == ((1,), "torch.float32", 0x3F80, 0x3F80 * 2)
