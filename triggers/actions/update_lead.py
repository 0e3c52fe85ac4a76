"""update_lead: set the lead's status or owner, add or remove tags; emits lead.updated when something changed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from leadhub.store import trigger_data
from leadhub.store.models import Lead
from leadhub.triggers.actions.base import Deps, Job, Permanent, RenderEnv, compile_text, fitting, render_text
from leadhub.triggers.sandbox import Scope, Templates
from leadhub.triggers.schema import UpdateLead


@dataclass(frozen=True)
class BoundUpdate:
    spec: UpdateLead
    owner: Any

    def render(self, context: dict[str, Any], env: RenderEnv) -> dict[str, Any]:
        lead = context.get("lead")
        return {
            "lead_id": getattr(lead, "id", None),
            "status": self.spec.status,
            "owner": (render_text(self.owner, context) or "").strip() or None,
            "add_tags": self.spec.add_tags,
            "remove_tags": self.spec.remove_tags,
        }

    async def execute(self, rendered: dict[str, Any], job: Job, deps: Deps) -> dict[str, Any]:
        if not rendered["lead_id"]:
            raise Permanent("the event has no lead to update")
        fitting(rendered["owner"], "owner", Lead.owner.type.length)
        assert deps.engine is not None
        async with deps.engine.begin() as conn:
            try:
                changed = await trigger_data.update_lead(conn, rendered["lead_id"], rendered, job.now)
            except LookupError as exc:
                raise Permanent(str(exc)) from None
        return {"lead_id": rendered["lead_id"], "changed": sorted(changed)}


class UpdateLeadAction:
    name = "update_lead"
    Spec = UpdateLead

    def compile(self, spec: UpdateLead, templates: Templates, scope: Scope) -> BoundUpdate:
        return BoundUpdate(spec, owner=compile_text(templates, scope, spec.owner, "owner"))
