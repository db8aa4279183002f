"""A small drawing of a testbed: machines as boxes, links as lines, shared segments as a bus."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from labtools.model.topology import Inventory

# Column per role, left (outside) to right (inside the cluster), like thesis Fig. 30.
ROLE_COLUMN = {"client": 0, "router": 1, "master": 2, "worker": 2, "pod": 3}


def _positions(inv: Inventory) -> dict[str, tuple[float, float]]:
    cols: dict[int, list[str]] = {}
    for m in inv.machines.values():
        cols.setdefault(ROLE_COLUMN.get(m.role, 1), []).append(m.name)
    pos = {}
    for x, names in cols.items():
        for k, name in enumerate(names):
            pos[name] = (x * 5.5, (len(names) - 1) / 2 * 2.0 - k * 2.0)
    # A pod sits level with the machine it hangs off.
    for lk in inv.links:
        for ep in lk.members:
            if inv.machines[ep.machine].role == "pod":
                other = next(e for e in lk.members if e != ep)
                pos[ep.machine] = (pos[ep.machine][0], pos[other.machine][1])
    return pos


def draw(inv: Inventory, ax: Axes | None = None) -> Axes:
    """Draw `inv`: each box lists the machine's interfaces and global addresses."""
    pos = _positions(inv)
    if ax is None:
        _, ax = plt.subplots(figsize=(12, 4.6))
    for lk in inv.links:
        pts = [pos[ep.machine] for ep in lk.members]
        if len(pts) == 2:
            (x1, y1), (x2, y2) = pts
            ax.plot([x1, x2], [y1, y2], color="0.35", lw=2, zorder=1)
            hub = None
        else:  # a shared L2 segment: a bus with drops
            hub = (sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts))
            for p in pts:
                ax.plot([p[0], hub[0]], [p[1], hub[1]], color="0.35", lw=2, zorder=1)
            ax.scatter(*hub, s=120, marker="s", color="0.35", zorder=2)
        ax.annotate(
            lk.name,
            hub or ((pts[0][0] + pts[1][0]) / 2, (pts[0][1] + pts[1][1]) / 2),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
            fontsize=8,
            color="0.3",
        )
    for name, (x, y) in pos.items():
        m = inv.machines[name]
        lines = [f"$\\bf{{{name}}}$ ({m.role}{', forwarding' if m.forwarding else ''})"]
        for i in m.interfaces.values():
            addrs = [str(a) for a in i.addresses if not a.ip.is_link_local] or ["link-local only"]
            lines += [f"{i.name}: {a}" for a in addrs]
        ax.text(
            x,
            y,
            "\n".join(lines),
            ha="center",
            va="center",
            fontsize=7.5,
            zorder=4,
            family="monospace",
            bbox={"boxstyle": "round,pad=0.4", "fc": "#dbe9f6", "ec": "#2b5d8a"},
        )
    ax.set_axis_off()
    ax.margins(0.12)
    mtus = sorted({i.mtu for m in inv.machines.values() for i in m.interfaces.values()})
    ax.set_title(f"{inv.name}: backend {inv.backend}, MTU {'/'.join(map(str, mtus))}")
    return ax
