"""The report section on decoding as a grid factor (issue 13): how each condition's training data
was sampled, when conditions differ in it (``single:a|decoding=NAME``)."""

from __future__ import annotations

import pandas as pd

from collapselab.report.format import Table, fmt_num
from collapselab.report.sections import ReportSection, SectionContext, register_section


def decoding_table(spec) -> Table:  # type: ignore[no-untyped-def]
    """One row per synthetic condition: the decoding its training data is sampled with."""
    rows = []
    for cond in spec.conditions:
        if cond.kind not in ("single", "multi"):
            continue
        for source in cond.sources:
            d = spec.data_decoding(cond, spec.source_decoding(source))
            rows.append({"condition": cond.label, "source": source, "variant": cond.decoding or "(default)",
                         "temperature": fmt_num(d.temperature), "top-p": fmt_num(d.top_p),
                         "beams": fmt_num(d.num_beams), "max new tokens": fmt_num(d.max_new_tokens)})
    return Table(pd.DataFrame(rows), caption="Generation 0: each source samples with its own decoding and the "
                 "condition's variant on top; later generations: the run's decoding with the variant on top.",
                 numeric={"temperature", "top-p", "beams", "max new tokens"})


def build(ctx: SectionContext) -> ReportSection | None:
    if not any(c.decoding for c in ctx.spec.conditions):
        return None
    return ReportSection(
        "decoding", "Decoding as a factor",
        intro="How the training data of each condition was sampled. Lower temperature and beam search "
              "concentrate the data on the model's modes, which the collapse literature finds accelerates "
              "collapse; compare the conditions' metrics above with these settings.",
        tables=[decoding_table(ctx.spec)])


register_section("decoding", "Decoding as a factor", build)
