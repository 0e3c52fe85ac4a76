"""create_task: a task for a manager (title, due, assignee) on the event's lead; one per action key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from leadhub.durations import parse_duration
from leadhub.ids import id_for_key
from leadhub.store import trigger_data
from leadhub.store.models import Task
from leadhub.triggers.actions.base import Deps, Job, RenderEnv, compile_text, fitting, render_text
from leadhub.triggers.sandbox import Scope, Templates
from leadhub.triggers.schema import CreateTask


@dataclass(frozen=True)
class BoundTask:
    spec: CreateTask
    title: Any
    assignee: Any
    note: Any

    def render(self, context: dict[str, Any], env: RenderEnv) -> dict[str, Any]:
        due = env.now + parse_duration(self.spec.due) if self.spec.due else None
        lead, contact = context.get("lead"), context.get("contact")
        return {
            "title": " ".join((render_text(self.title, context) or "").split())[:300],
            "assignee": (render_text(self.assignee, context) or "").strip() or None,
            "note": render_text(self.note, context),
            "due_at": due.isoformat() if due else None,
            "lead_id": getattr(lead, "id", None),
            "contact_id": getattr(contact, "id", None),
        }

    async def execute(self, rendered: dict[str, Any], job: Job, deps: Deps) -> dict[str, Any]:
        from datetime import datetime

        task_id = id_for_key(f"task:{job.key}")
        values = {
            "id": task_id,
            "title": rendered["title"],
            "note": rendered["note"],
            "due_at": datetime.fromisoformat(rendered["due_at"]) if rendered["due_at"] else None,
            "assignee": fitting(rendered["assignee"], "assignee", Task.assignee.type.length),
            "lead_id": rendered["lead_id"],
            "contact_id": rendered["contact_id"],
            "rule_id": job.rule_id,
            "status": "open",
            "created_at": job.now,
            "updated_at": job.now,
        }
        assert deps.engine is not None
        async with deps.engine.begin() as conn:
            created = await trigger_data.insert_task(conn, values)
        return {"task_id": task_id, "already_created": not created}


class CreateTaskAction:
    name = "create_task"
    Spec = CreateTask

    def compile(self, spec: CreateTask, templates: Templates, scope: Scope) -> BoundTask:
        return BoundTask(
            spec,
            title=compile_text(templates, scope, spec.title, "title"),
            assignee=compile_text(templates, scope, spec.assignee, "assignee"),
            note=compile_text(templates, scope, spec.note, "note"),
        )
