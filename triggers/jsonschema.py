"""The JSON Schema of rule files, generated from the pydantic models (`python -m leadhub.triggers.jsonschema`)."""

from __future__ import annotations

import json
from typing import Any

from leadhub.triggers.events import EVENT_OBJECTS
from leadhub.triggers.schema import ACTION_MODELS, BusinessHours, QuietHours, Rule

SCHEMA_ID = "https://leadhub.example/rules.schema.json"


def _action_schema(name: str) -> dict[str, Any]:
    options = ACTION_MODELS[name].model_json_schema(by_alias=True)
    options["properties"].pop("type", None)
    options.pop("title", None)
    return {
        "type": "object",
        "title": name,
        "description": options.pop("description", ""),
        "additionalProperties": False,
        "required": [name],
        "properties": {name: options},
    }


def rule_file_schema() -> dict[str, Any]:
    """The YAML form admins write: `rules:` a list of rules, each action a one-key mapping."""
    rule = Rule.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
    defs = rule.pop("$defs", {})
    for name in list(defs):
        if name in {m.__name__ for m in ACTION_MODELS.values()}:
            del defs[name]
    props = rule["properties"]
    props["do"] = {"type": "array", "minItems": 1, "items": {"oneOf": [_action_schema(n) for n in ACTION_MODELS]}}
    event_type = {"type": "string", "enum": list(EVENT_OBJECTS)}
    props["on"] = {"anyOf": [event_type, {"type": "array", "items": event_type, "minItems": 1}]}
    props["schedule"] = {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/Schedule"}]}
    props["throttle"] = {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/Throttle"}]}
    # The shorthands the rule's validators accept: `for_each: contact`, and `contact:` with no selection.
    props["for_each"]["anyOf"].insert(0, {"type": "string", "enum": ["contact"]})
    for_each = defs["ForEach"]["properties"]
    for_each["contact"] = {"anyOf": [for_each["contact"], {"type": "null"}]}
    rule.pop("title", None)
    hours = {}
    for key, model in (("business_hours", BusinessHours), ("quiet_hours", QuietHours)):
        defs[model.__name__] = model.model_json_schema(by_alias=True)
        hours[key] = {"type": "object", "additionalProperties": {"$ref": f"#/$defs/{model.__name__}"}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "leadhub rule file",
        "type": "object",
        "additionalProperties": False,
        "properties": {"rules": {"type": "array", "items": {"$ref": "#/$defs/Rule"}}, **hours},
        "$defs": {**defs, "Rule": rule},
    }


def render() -> str:
    return json.dumps(rule_file_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
