"""docs/coverage_timm.md from the rows `zoo_coverage.py --zoo timm` wrote (docs/coverage_timm.json)."""

from __future__ import annotations

import re
from collections import Counter

from zoo_timm import MAX_RATIO, SIZE, TARGET, TP_TIMEOUT
from zoo_tp import PRUNING_RATIO, RTOL

# The models of issue 20's table (timm 1.0.31, before timm support): each must reach the target.
ISSUE_MODELS = (
    "resnet18d", "resnet26t", "seresnext26d_32x4d", "resnest14d", "res2net50_14w_8s", "ghostnet_100",
    "dla34", "hrnet_w18_small", "xception41", "convnext_atto", "fastvit_t8", "efficientnet_b0",
    "mobilenetv3_small_050", "mobilenetv4_conv_small", "regnetx_002", "regnety_002", "regnetz_b16",
    "densenet121", "inception_v3", "cspresnet50", "repvgg_a0", "mobileone_s0", "mixnet_s", "skresnet18",
    "nf_resnet26", "convnextv2_atto", "tf_efficientnetv2_b0", "mobilevit_xxs", "efficientvit_m0",
)  # fmt: skip

_BOUNDARY = ("model input", "model output")


def reaches(r: dict[str, object]) -> bool:
    """L1 reached the target (counted on the rewritten model), verified lossless, and exported."""
    return r["stage"] == "done" and float(r["l1_flops"]) <= TARGET + 0.01  # type: ignore[arg-type]


def _kind(reason: str) -> str:
    """A pin reason without the module and node it names: one line per kind of op on the page."""
    reason = re.sub(r"'[^']*'", "'…'", reason.split(" at ")[0])
    return re.sub(r"\b\w*_\d\w*\b", "…", reason)


def _kinds(reasons: list[str]) -> list[str]:
    return sorted({_kind(r) for r in reasons if r and r not in _BOUNDARY})


def _ops(reasons: list[str]) -> str:
    kinds = _kinds(reasons)
    shown = "; ".join(kinds[:3]) + (f" (+{len(kinds) - 3} more)" if len(kinds) > 3 else "")
    return shown.replace("|", "\\|")


def tp_runs(r: dict[str, object]) -> bool:
    return r.get("tp_status") == "ok" and r.get("tp_runs") is True


def tp_matches(r: dict[str, object]) -> bool:
    return tp_runs(r) and r.get("tp_matches_masked") is True


def _cell(text: str, limit: int = 120) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|").replace("\n", " ")


def _tp(r: dict[str, object]) -> str:
    """The Torch-Pruning cell: runs? matches the masked reference? (and the FLOPs share it kept)."""
    status = str(r.get("tp_status", ""))
    note = str(r.get("tp_note") or "")
    if not status or status == "not run":
        return "–"
    if status == "not installed":
        return "– not installed"
    if status != "ok":
        return f"❌ {_cell(status)}"
    if r.get("tp_runs") is not True:
        return f"❌ {_cell(note or 'the pruned model fails')}"
    flops = r.get("tp_flops")
    kept = f"; FLOPs {float(flops):.2f}" if isinstance(flops, int | float) else ""
    if r.get("tp_matches_masked") is True:
        return f"✅ runs, matches{kept}"
    if r.get("tp_matches_masked") is False:
        why = "; norms over channels pruned" if "statistics" in note else ""
        return f"⚠️ runs, differs (rel. err {float(r['tp_rel_error']):.0e}){why}{kept}"  # type: ignore[arg-type]
    return f"✅ runs, not compared ({_cell(note.removeprefix('no reference: '), 80)}){kept}"


def _tp_summary(results: list[dict[str, object]]) -> str:
    ran = [r for r in results if r.get("tp_status") not in (None, "not run", "not installed")]
    if not ran:
        return "Torch-Pruning: not run (not installed, or rows from before the column)."
    runs = [r for r in ran if tp_runs(r)]
    differs = [r for r in runs if r.get("tp_matches_masked") is False]
    unknown = [r for r in runs if r.get("tp_matches_masked") is None]
    return (
        f"**Torch-Pruning: its pruned model runs on {len(runs)} of {len(ran)} models; its output matches "
        f"the masked reference on {sum(1 for r in runs if tp_matches(r))} of them** "
        f"(differs on {len(differs)}, not compared on {len(unknown)})."
    )


def _row(r: dict[str, object]) -> str:
    trace = "❌" if r["stage"] in ("trace", "crashed") else "✅"
    if reaches(r):
        l1 = f"✅ {float(r['l1_flops']):.2f}"  # type: ignore[arg-type]
    elif r["stage"] == "plan":
        l1 = f"❌ floor {float(r['floor']):.2f}"  # type: ignore[arg-type]
    else:
        l1 = f"❌ at {r['stage']}"
    oracle = "✅" if r.get("oracle_plans") and not r.get("oracle_error") else "❌"
    export = f"{float(r['onnx_max_rel_error']):.0e}" if r["stage"] == "done" else "–"  # type: ignore[arg-type]
    why = _ops(list(r["unprunable_reasons"]))  # type: ignore[call-overload]
    if r["stage"] not in ("done", "plan") and r.get("error"):
        why = (why + "; " if why else "") + f"{r['stage']}: {str(r['error'])[:160]}".replace("|", "\\|")
    size = int(r.get("input_size", SIZE))  # type: ignore[call-overload]
    model = f"{r['model']}" + (f" ({size} px)" if size != SIZE else "")
    return (
        f"| {model} | {r['family']} | {trace} | {r['groups']} ({r['prunable_groups']}) | "
        f"{float(r['prunable_channels']):.0%} | {r['blocks']} | {l1} | {oracle} | {export} | {why} | "  # type: ignore[arg-type]
        f"{_tp(r)} |"
    )


def write_timm_markdown(results: list[dict[str, object]], planned: int) -> str:
    n = len(results)
    ok = [r for r in results if reaches(r)]
    oracle_ok = [r for r in results if r.get("oracle_plans") and not r.get("oracle_error")]
    issue = [r for r in results if r["model"] in ISSUE_MODELS]
    issue_ok = [r for r in issue if reaches(r)]
    stoppers = Counter(
        k
        for r in results
        if not reaches(r)
        for k in _kinds(list(r["unprunable_reasons"]))  # type: ignore[call-overload]
    )
    lines = [
        "# timm coverage",
        "",
        "Generated by `python benchmarks/zoo_coverage.py --zoo timm` (do not edit by hand). Each model is",
        f"built from the `timm:NAME` spec (random init, seeded; input 1x3x{SIZE}x{SIZE}, models fixing their",
        "input size are created for it; a model that runs only at its own size says so), in a process of",
        "its own with one torch thread:",
        "",
        "- **trace**: torch.fx tracing and the channel analysis;",
        "- **groups (prunable)** and **prunable channels**: channel groups, and the share of channel",
        "  positions in prunable groups; **blocks**: removable residual branches;",
        f"- **L1 → {TARGET}**: `plan_by_criterion(pg, 'l1', {TARGET})` (global, at most {MAX_RATIO:.0%} of a",
        "  group), applied (verified against the original with the planned channels masked at every",
        "  consumer) and exported to ONNX (checked with onnxruntime); the number is the FLOPs share counted",
        "  on the rewritten model. Where the target is out of reach, the floor is the FLOPs share left with",
        f"  {MAX_RATIO:.0%} of every prunable group removed: the ops pinning the rest are named;",
        "- **oracle**: 3 random plans (30% of every prunable group, each block removed with probability",
        "  1/2), each checked against the independent producer-zeroing oracle (`benchmarks/zoo_oracle.py`).",
        "  The oracle assumes the ops between a producer and its consumers map zero to zero: a softmax",
        "  over tokens between two convs over attention heads (EfficientFormerV2's talking heads) does not,",
        "  so it reports a leak there that removing the channels (what `apply` verifies) does not have;",
        "- **export rel. err**: ONNX (onnxruntime) against the pruned PyTorch model;",
        "- **why some channels stay**: the reasons of the pinned groups (model input and output not listed);",
        f"- **Torch-Pruning (ratio {PRUNING_RATIO})**: Torch-Pruning (`BasePruner`, group L2 magnitude,",
        f"  its README's default; local, the classifier ignored) at `pruning_ratio={PRUNING_RATIO}` on a",
        "  copy of the same model (`benchmarks/zoo_tp.py`), given at most "
        f"{TP_TIMEOUT} s. The ratio is Torch-Pruning's",
        "  channel ratio, half of every group's channels, not half of the FLOPs: the FLOPs share it keeps",
        "  (its own counter) is shown. Whether its pruned model runs on the example, and whether its output",
        "  matches the **masked reference**: the unpruned copy with, at every conv and linear whose input",
        "  channels Torch-Pruning removed, those input channels zeroed (read from its pruning groups as it",
        "  executes them; a depthwise conv's input and output channels go together). A correct removal",
        f"  computes exactly that: it matches when max |pruned - reference| <= {RTOL:g} x max |reference|,",
        "  on the example and a second random input, both run in float64 (float32 rounding alone reaches",
        "  1e-3 in the deepest nets; a wrong channel gives 1e-2 and more). Norms are not masked: where",
        "  Torch-Pruning removes channels of a LayerNorm or GroupNorm (statistics over the channels), or of",
        "  another op that reads across channels (a mean or softmax over them), the pruned model computes",
        "  something else, and differs. Constant-initialised parameters (zero-init BatchNorm, layer scales)",
        "  and the BatchNorm statistics are randomised (seeded) in the copy first, so that no branch hides a",
        "  wrong rewrite. 'not compared' gives the reason no honest reference exists (the output's shape",
        "  changed, channels removed at a module the reference cannot mask).",
        "",
    ]
    if n < planned:
        lines += [f"**Partial run: {n} of the {planned} planned models have a row.**", ""]
    lines += [
        f"**{len(ok)} of {n} models ({len(ok) / max(1, n):.0%}) reach {TARGET} of the FLOPs with L1, "
        f"verified lossless and exported.** The oracle passes on {len(oracle_ok)} of {n}. "
        f"Of the {len(issue)} models "
        f"of issue 20's table run here, {len(issue_ok)} reach it"
        + (
            f"; not: {', '.join(str(r['model']) for r in issue if not reaches(r))}."
            if len(issue_ok) < len(issue)
            else "."
        ),
        "",
        _tp_summary(results),
        "",
        "| model | family | trace | groups (prunable) | prunable channels | blocks | L1 → 0.5 | oracle |"
        f" export rel. err | why some channels stay | Torch-Pruning (ratio {PRUNING_RATIO}) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(r) for r in results]
    lines += ["", "## What stops the models that do not reach the target", ""]
    lines += [f"- {k} ({c} of them)" for k, c in stoppers.most_common()] or [
        "Nothing: every model reaches it."
    ]
    failed = [r for r in results if r["stage"] not in ("done", "plan")]
    oracle_failed = [r for r in results if r.get("oracle_error")]
    lines += ["", "## Failures", ""]
    lines += [f"- **{r['model']}** (at {r['stage']}): {r['error']}" for r in failed] or ["None."]
    lines += ["", "## Oracle reports", ""]
    lines += [f"- **{r['model']}**: {r['oracle_error']}" for r in oracle_failed] or ["None."]
    tp_notes = [r for r in results if r.get("tp_status") not in (None, "not run") and not tp_matches(r)]
    lines += ["", "## Torch-Pruning: where it fails, differs or is not compared", ""]
    lines += [
        f"- **{r['model']}**: {_tp(r)}" + (f" — {r['tp_note']}" if r.get("tp_note") else "") for r in tp_notes
    ] or ["None."]
    lines.append("")
    return "\n".join(lines)
