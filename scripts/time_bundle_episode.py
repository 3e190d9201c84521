"""Time one DUS episode on a CNN-encoder bundle, per device.

By default on a generated bundle: N samples of 1 x 128 x 128 spectrograms
and 3 x 112 x 112 frames (class signal in both), saved as a folder bundle,
loaded memory-mapped; or on a bundle of yours (``--bundle cremad_ogm``, as
``python -m dus_gym.data.convert`` writes it, docs/bundles.md). One episode
of the env with the DUS heuristic. Prints one JSON line per device and data
placement with the wall time of the episode (reset included) and of its
steps; a CUDA device without CUDA is reported as skipped.

    python scripts/time_bundle_episode.py --devices cuda cpu --n 2000 --n-steps 3
    python scripts/time_bundle_episode.py --devices cuda --bundle cremad_ogm --encoder resnet18

Without a GPU, tiny settings finish in about 10 s on 2 CPU cores:

    python scripts/time_bundle_episode.py --devices cpu --n 64 --n-steps 2 --iterations-per-step 2 --base-batch 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dus_gym.data import save_bundle
from dus_gym.envs import DUSEnv
from dus_gym.policies import make_policy
from dus_gym.run import RunConfig, resolve_device


def make_bundle(path: Path, n: int, seed: int) -> Path:
    """Spectrograms (N, 1, 128, 128) and frames (N, 3, 112, 112), 6 classes, float32."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 6
    spec = rng.normal(size=(n, 1, 128, 128)).astype(np.float32)
    spec[:, 0, :16, :] += 0.3 * labels[:, None, None]
    frames = rng.normal(size=(n, 3, 112, 112)).astype(np.float32)
    frames[:, :, :16, :16] += 0.1 * labels[:, None, None, None]
    return save_bundle(path, {"audio": spec, "visual": frames}, labels, [str(c) for c in range(6)])


def time_episode(bundle: Path, device: str, args: argparse.Namespace, placement: str) -> dict[str, object]:
    env = DUSEnv(
        dataset=f"bundle:{bundle}", n_steps=args.n_steps, iterations_per_step=args.iterations_per_step,
        base_batch=args.base_batch, device=device,
        run_config={"encoders": (args.encoder, args.encoder), "data_placement": placement, "probe_steps": 20},
    )
    policy = make_policy("dus_h", env)
    where = resolve_device(device)

    def sync() -> None:
        if where.type == "cuda":
            torch.cuda.synchronize(where)

    start = time.perf_counter()
    obs, _ = env.reset(seed=0)
    sync()
    reset_s = time.perf_counter() - start
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(policy.predict(obs)[0])
        done = terminated or truncated
    sync()
    total = time.perf_counter() - start
    assert env.run is not None
    name = torch.cuda.get_device_name(where) if where.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return {
        "device": name,
        "placement": env.run.data_placement, "encoder": args.encoder, "n": args.n, "n_steps": args.n_steps,
        "iterations_per_step": args.iterations_per_step, "base_batch": args.base_batch,
        "episode_s": round(total, 3), "reset_s": round(reset_s, 3),
        "per_step_s": round((total - reset_s) / args.n_steps, 3), "test_accuracy": info["test"]["accuracy"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", nargs="+", default=["cuda", "cpu"], help="devices to time, in order")
    p.add_argument("--placements", nargs="+", default=["auto"], help="data_placement values (auto, device, host)")
    p.add_argument("--n", type=int, default=2000, help="samples in the generated bundle")
    p.add_argument("--n-steps", type=int, default=3, help="steps of the episode")
    p.add_argument("--iterations-per-step", type=int, default=None, help="default: one epoch")
    p.add_argument("--base-batch", type=int, default=RunConfig.base_batch)
    p.add_argument("--encoder", default="cnn", help="cnn or resnet18")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bundle", type=Path, default=None,
                   help="time this bundle (a folder or .npz) instead of a generated one; --n is then its size")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.bundle is not None:
            from dus_gym.data import load_bundle

            bundle = args.bundle.resolve()
            args.n = len(load_bundle(bundle))
        else:
            bundle = make_bundle(Path(tmp) / "timing_bundle", args.n, args.seed)
        for device in args.devices:
            try:
                resolve_device(device)
            except ValueError as err:  # a device this machine lacks (cuda without CUDA): skipped, said why
                print(json.dumps({"device": device, "skipped": str(err)}))
                continue
            for placement in args.placements:
                print(json.dumps(time_episode(bundle, device, args, placement)), flush=True)


if __name__ == "__main__":
    main()
