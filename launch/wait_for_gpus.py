"""Block until a Ray cluster reports at least N GPUs on live nodes, or fail saying what is missing.

    python launch/wait_for_gpus.py --address HOST:6379 --gpus 16 [--timeout 600]

Polls the cluster's own state (ray.cluster_resources() and ray.nodes()) every couple of
seconds; a node counts once the head's GCS lists it alive with its GPUs. Exit 0 when enough
GPUs are present, 1 on timeout (the message lists the nodes seen and the GPUs missing). The
first connection is retried too: the head may still be starting.
"""

from __future__ import annotations

import argparse
import sys
import time

POLL_S = 2.0


def gpus_seen(ray) -> tuple[float, list[str]]:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    described = [
        f"{n.get('NodeManagerAddress', '?')}: {n['Resources'].get('GPU', 0):g} GPU" for n in nodes
    ]
    return ray.cluster_resources().get("GPU", 0.0), described


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--gpus", type=float, required=True)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    import ray

    deadline = time.monotonic() + args.timeout
    while True:
        try:
            if not ray.is_initialized():
                ray.init(address=args.address, logging_level="ERROR", log_to_driver=False)
            have, nodes = gpus_seen(ray)
        except ConnectionError as exc:  # the head is not up yet
            have, nodes = 0.0, [f"(no connection: {exc})"]
        if have >= args.gpus:
            print(f"ray cluster ready: {have:g} GPUs on {len(nodes)} node(s)")
            return 0
        if time.monotonic() > deadline:
            print(
                f"ray cluster not ready after {args.timeout:g} s: {have:g} of {args.gpus:g} GPUs, "
                f"{args.gpus - have:g} missing; nodes: {'; '.join(nodes) or 'none'}",
                file=sys.stderr,
            )
            return 1
        time.sleep(POLL_S)  # between polls of the real state, not in place of them


if __name__ == "__main__":
    sys.exit(main())
