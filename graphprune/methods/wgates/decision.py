"""A W-Gates gate stage's decision (its read-off and repaired plan, with the report) saved beside the
stage, for a resumed run to reuse rather than measure its repair again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from graphprune.fileio import write_text
from graphprune.graph import PrunableGraph
from graphprune.plan import PruningPlan
from graphprune.train.state import read_done

DECISION_FILE = "{stage}_decision.json"


def save_decision(
    run_dir: str | Path, stage: str, plan: PruningPlan, report: dict[str, Any], plots: list[Path],
    inputs: dict[str, Any],
) -> None:  # fmt: skip
    """Persist the stage's read-off and repaired plan with its report, for a resumed run to reuse: the
    repair measures latency, so deciding again after a kill could give another plan than the one the
    later stages' checkpoints were trained on. Tied to the gate stage's `done.json` and to `inputs`
    (JSON: the budget and options the decision was made for)."""
    record = {
        "stage_done": read_done(run_dir, stage),
        "inputs": inputs,
        "plan": plan.to_dict(),
        "report": report,
        "plots": [p.name for p in plots],
    }
    write_text(Path(run_dir) / DECISION_FILE.format(stage=stage), json.dumps(record, indent=1) + "\n")


def saved_decision(
    run_dir: str | Path | None, stage: str, pg: PrunableGraph, inputs: dict[str, Any]
) -> tuple[PruningPlan, dict[str, Any], list[Path]] | None:
    """The plan, report and plots `save_decision` wrote for this gate stage, or None when there is none,
    the stage has been trained since (its `done.json` differs) or it was decided for other `inputs` (a
    run continued with another budget decides again). A plan for another model raises."""
    if run_dir is None:
        return None
    path = Path(run_dir) / DECISION_FILE.format(stage=stage)
    done = read_done(run_dir, stage)
    if not path.is_file() or done is None:
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("stage_done") != done or record.get("inputs") != json.loads(json.dumps(inputs)):
        return None
    plan = PruningPlan.from_dict(record["plan"], source=str(path))
    plan.validate(pg)
    return plan, record["report"], [Path(run_dir) / name for name in record["plots"]]
