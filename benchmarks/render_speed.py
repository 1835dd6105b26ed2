"""Benchmark: a full render (256 steps, 128 px) of one channel on both networks, artlab against a plain loop.

    python benchmarks/render_speed.py --run RUN [--layers features.6,features.17,features.18] [--repeats 3]

What the channel explorer computes when the user picks a channel not rendered yet: one image for the
ImageNet network and one for the fine-tuned run. `artlab` is `featurevis.optimise`, which renders on a copy
of the network with its BatchNorm folded into the convolutions and channels_last weights. `plain` is the
same optimisation (the same image parameterisation, transforms, objective and steps) on the network as it
is, in eval mode, through forward hooks: what the renders did before. One process; the figure is the median
over `--repeats` rounds, the two alternating. Each render also reports the channel's mean activation on its
image, through the unmodified network: the renders differ in their pixels, the benchmark shows they are as
good. Results go to benchmarks/results/render-speed.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from artlab import models
from artlab.interpret import featurevis
from artlab.runs import IMAGENET, Network

RESULTS = Path(__file__).resolve().parent / "results" / "render-speed.json"


def plain_render(model: torch.nn.Module, layer: str, channel: int, settings: featurevis.RenderSettings):
    """The optimisation loop on the network as it is (no folding, no copy)."""
    spec = models.arch_of(model)
    objective = featurevis.channel(layer, [channel])
    image = featurevis.FourierImage([settings.seed * 1_000_003], settings.size)
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.Adam(image.parameters(), lr=settings.lr)
    with featurevis.frozen_eval(model), models.Taps(model, [layer], pool="none", stop_early=True) as taps:
        for _ in range(settings.steps):
            optimizer.zero_grad(set_to_none=True)
            acts, logits = taps.run(featurevis._normalise(settings.robustness.apply(image(), generator), spec))
            (-objective.score(acts, logits).sum()).backward()
            optimizer.step()
    with torch.no_grad():
        return image().detach()


def artlab_render(model: torch.nn.Module, layer: str, channel: int, settings: featurevis.RenderSettings):
    return featurevis.optimise(model, featurevis.channel(layer, [channel]), 1, settings, progress=False)


def activation(model: torch.nn.Module, image: torch.Tensor, layer: str, channel: int) -> float:
    """The channel's mean activation on the image, through the unmodified network."""
    spec = models.arch_of(model)
    with torch.no_grad(), featurevis.frozen_eval(model), models.Taps(model, [layer], pool="avg") as taps:
        acts, _ = taps.run(featurevis._normalise(image, spec))
    return float(acts[layer][0, channel])


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--run", required=True, help="a fine-tuned MobileNetV2 run (the series' freeze-10 run)")
    options.add_argument("--layers", default="features.6,features.17,features.18")
    options.add_argument("--channel", type=int, default=10)
    options.add_argument("--repeats", type=int, default=3)
    args = options.parse_args()
    networks = [Network.of(IMAGENET, "mobilenet_v2").build(), Network.of(args.run).build()]
    settings = featurevis.RenderSettings()
    rows = []
    for layer in args.layers.split(","):
        times: dict[str, list[float]] = {"plain": [], "artlab": []}
        images: dict[str, list[torch.Tensor]] = {}
        for _ in range(args.repeats):
            for name, render in (("plain", plain_render), ("artlab", artlab_render)):
                start = time.perf_counter()
                images[name] = [render(model, layer, args.channel, settings) for model in networks]
                times[name].append(time.perf_counter() - start)
        scores = {name: [activation(m, i, layer, args.channel) for m, i in zip(networks, rendered)]
                  for name, rendered in images.items()}  # each round renders the same images
        plain, fast = statistics.median(times["plain"]), statistics.median(times["artlab"])
        rows.append({"layer": layer, "channel": args.channel, "plain_s": round(plain, 2), "artlab_s": round(fast, 2),
                     "runs_s": {k: [round(x, 2) for x in v] for k, v in times.items()},
                     "speed_up": round(plain / fast, 2), "activation": {k: [round(x, 3) for x in v]
                                                                       for k, v in scores.items()}})
        print(f"{layer}: plain {plain:.1f} s, artlab {fast:.1f} s, {plain / fast:.2f}x; activation "
              f"{rows[-1]['activation']}")
    RESULTS.write_text(json.dumps({"steps": settings.steps, "size": settings.size, "repeats": args.repeats,
                                   "threads": torch.get_num_threads(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
