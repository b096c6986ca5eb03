"""What every figure is drawn with: one style, one palette, the reference line, the sweep axes' ticks and legend."""

from __future__ import annotations

from studylib.report.markdown import missing


class Skip(Exception):
    """A figure that cannot be drawn from the records there are (yet); the message says why."""


def style() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", font_scale=1.05)
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 200, "savefig.bbox": "tight",
                                "pdf.fonttype": 42, "axes.titleweight": "bold"})


def save(fig, stem) -> list[str]:
    """``<stem>.pdf`` and ``<stem>.png`` without dates or versions in them (the same figure, the same bytes)."""
    names = []
    for ext in ("pdf", "png"):
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, metadata={"CreationDate": None} if ext == "pdf" else {"Software": None})
        names.append(path.name)
    return names


def colours(n: int):
    import seaborn as sns

    return sns.color_palette("tab10" if n <= 10 else "husl", max(n, 1))


def ref_line(ax, value, label) -> None:
    if not missing(value):
        ax.axhline(value, color="#555555", ls="-.", lw=1, zorder=0, label=label)


def short(v) -> str:
    """A tick or legend value: integers without '.0', round thousands as '1k'."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, int) and v >= 1000 and v % 1000 == 0:
        return f"{v // 1000}k"
    return str(v)


def x_ticks(ax, values, log_x: bool = False) -> None:
    """Ticks at the sweep's settings (when few and whole); ``log_x``: a log axis, linear from 0 to the smallest
    positive setting when 0 is one of them."""
    values = sorted({float(v) for v in values if not missing(v)})
    if log_x:
        positive = [v for v in values if v > 0]
        if any(v == 0 for v in values):
            ax.set_xscale("symlog", linthresh=min(positive) if positive else 1)
        else:
            ax.set_xscale("log", base=2)
    if values and len(values) <= 12 and all(v.is_integer() for v in values):
        ax.set_xticks(values)
        ax.set_xticklabels([short(v) for v in values])
        ax.minorticks_off()
    ax.margins(x=0.08)
    ax.autoscale_view()


def legend_below(fig, axes, ncol: int = 2) -> None:
    """One legend under the panels, each label once."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, frameon=False, fontsize=7.5)
