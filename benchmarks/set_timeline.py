"""A frame set's way through the occupancy node, split into consecutive segments: where the
end-to-end latency of ``benchmarks/node_latency.py --mode ros`` goes, set by set (also read by
``benchmarks/realtime_summary.py``; no heavy imports)."""

from __future__ import annotations

import numpy as np

# A set's way through the node, in order: (segment, the mark that ends it). "published" is the
# feeder's clock after the set's last image publish returned, "arrival" the set complete in the node
# (FrameSet.arrival), "received" its occupancy in the subscriber: one clock (CLOCK_MONOTONIC) for all.
TIMELINE = (
    ("dds_in", "arrival"),  # DDS, conversion to messages, the synchronizer
    ("queue", "taken"),  # waiting in the latest-only slot: the prepare thread busy with the set before
    ("stage1", "prepared"),  # TF, conversion, upload, the prediction queued
    ("handoff", "handed"),  # waiting for the publish thread, busy with the set before
    ("device", "ready"),  # the prediction (and what of the set before was still on the device)
    ("outputs", "received"),  # building or handing over the outputs, publishing, DDS out, the receiver
)
# The "outputs" segment split at the moment the occupancy message was handed to rclpy (mark
# "occupancy_out", the node's on_occupancy_published time; from the output process when it publishes):
# reported beside the segments, not among them, since older runs lack the mark.
OUTPUT_SPLIT = (
    ("outputs_published", "ready", "occupancy_out"),
    ("outputs_delivery", "occupancy_out", "received"),
)
TIMELINE_LABELS = {
    "dds_in": "DDS in, conversion, sync",
    "queue": "waiting for stage 1",
    "stage1": "stage 1 (TF, conversion, upload)",
    "handoff": "waiting for stage 2",
    "device": "device",
    "outputs": "outputs to the subscriber",
}


def set_timeline(
    stamps, published: dict, arrivals: dict, marks: dict, received: dict
) -> dict[str, list[float]]:
    """Each set's latency (last image published -> occupancy received) split into the consecutive
    ``TIMELINE`` segments [ms], which add up to it exactly. ``stamps``: the sets [ns]; the other
    arguments map a stamp to a time [s] (``marks``: to the node's marks, ``instrument_node_stages``).
    A set missing any mark (dropped, or still in flight) is left out. Returns ``{segment: [ms, ...],
    "total": [ms, ...]}``, one entry per kept set, in the order of ``stamps``; with the
    ``OUTPUT_SPLIT`` lists too where kept sets have the "occupancy_out" mark (one entry per such set)."""
    out: dict[str, list[float]] = {name: [] for name, _ in TIMELINE}
    out["total"] = []
    split: dict[str, list[float]] = {name: [] for name, _, _ in OUTPUT_SPLIT}
    for s in stamps:
        times = {"published": published.get(s), "arrival": arrivals.get(s), "received": received.get(s)}
        times.update(marks.get(s, {}))
        chain = [times.get("published")] + [times.get(end) for _, end in TIMELINE]
        if any(t is None for t in chain):
            continue
        for (name, _), a, b in zip(TIMELINE, chain, chain[1:]):
            out[name].append(1e3 * (b - a))
        out["total"].append(1e3 * (chain[-1] - chain[0]))
        if times.get("occupancy_out") is not None:
            for name, start, end in OUTPUT_SPLIT:
                split[name].append(1e3 * (times[end] - times[start]))
    if split["outputs_published"]:  # only where the node reported when the occupancy went out
        out.update(split)
    return out


def summarize_timeline(timeline: dict[str, list[float]]) -> dict:
    """``{"sets": n, segment: {"mean", "p50", "p99"}}`` of ``set_timeline``'s lists (means add up to
    the total's mean; percentiles do not)."""
    n = len(timeline.get("total", []))
    summary: dict = {"sets": n}
    if n:
        for name, values in timeline.items():
            array = np.asarray(values, dtype=np.float64)
            summary[name] = {
                "mean": float(array.mean()),
                "p50": float(np.percentile(array, 50)),
                "p99": float(np.percentile(array, 99)),
            }
    return summary


def timeline_line(summary: dict, what: str) -> str | None:
    """One sentence: where a set's time went (means, ms), or None without sets."""
    if not summary or not summary.get("sets"):
        return None
    parts = timeline_parts(summary)
    return (
        f"Where a set's time went, {what} (mean ms over {summary['sets']} sets; they add up to the "
        f"end-to-end mean {summary['total']['mean']:.1f}, p99 {summary['total']['p99']:.1f}): {parts}."
    )


def timeline_parts(summary: dict) -> str:
    """ "DDS in, conversion, sync 1.6, waiting for stage 1 20.3, ...": each segment's mean [ms]; the
    outputs' segment split where the run has the split ("... 7.4 (occupancy published after 4.1,
    then DDS and the subscriber 3.3)"; the split's means are over the sets that have it)."""
    parts = [f"{TIMELINE_LABELS[name]} {summary[name]['mean']:.1f}" for name, _ in TIMELINE]
    if "outputs_published" in summary and "outputs_delivery" in summary:
        parts[-1] += (
            f" (occupancy published after {summary['outputs_published']['mean']:.1f}, then DDS and the "
            f"subscriber {summary['outputs_delivery']['mean']:.1f})"
        )
    return ", ".join(parts)
