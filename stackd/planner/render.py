"""Render a Plan for people (like a terraform plan) and as JSON; both deterministic."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stackd.planner.plan import Plan

SYMBOL = {"pull": "↓", "create-network": "+", "create-volume": "+", "create": "+", "start": "▸",
          "stop": "■", "remove": "-", "rename": "~", "wait-healthy": "…", "wait-completed": "…"}


def render_text(plan: Plan) -> str:
    """Each action in order with its target, service and reason, then warnings and a summary."""
    from stackd.planner.plan import summary

    diff = plan.diff
    lines = []
    if plan.empty:
        lines.append(f"Stack {plan.project}: no changes, the stack is up to date.")
    else:
        lines.append(f"Stack {plan.project}: stackd will perform these actions:")
        lines.append("")
        width_kind = max(len(a.kind) for a in plan.actions)
        width_target = max(len(a.target) for a in plan.actions)
        for a in plan.actions:
            target = a.target + (f" → {a.new_name}" if a.new_name else "")
            reason = f"{a.service}: {a.reason}" if a.service and a.kind not in ("pull",) else a.reason
            lines.append(f"  {SYMBOL[a.kind]} {a.kind:<{width_kind}}  {target:<{width_target}}  {reason}".rstrip())
    for w in diff.warnings:
        lines.append(f"warning: {w}")
    lines.append("")
    lines.append(f"Plan: {summary(diff)}.")
    return "\n".join(lines) + "\n"


def render_json(plan: Plan) -> dict[str, Any]:
    """A JSON-ready dict: actions (with the targets they wait for), changes, summary, warnings."""
    from stackd.planner.plan import summary

    index = {a: i for i, a in enumerate(plan.actions)}
    return {
        "stack": plan.project,
        "actions": [
            {"id": index[a], "kind": a.kind, "target": a.target, "service": a.service, "reason": a.reason,
             **({"new_name": a.new_name} if a.new_name else {}),
             "after": [index[p] for p in plan.predecessors[a]]}
            for a in plan.actions
        ],
        "changes": [{"kind": c.kind, "service": c.service, "container": c.name, "reason": c.reason}
                    for c in diff_changes(plan)],
        "summary": summary(plan.diff),
        "warnings": list(plan.diff.warnings),
    }


def diff_changes(plan: Plan) -> list[Any]:
    return sorted(plan.diff.changes, key=lambda c: (c.service, c.name, c.kind))
