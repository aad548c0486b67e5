"""Validation of analysis configs (prompts, data fields, model), shared by the API and the importer."""

from __future__ import annotations

import re
from typing import Any

from graphql_api.analysis.base import (
    RATIONALE_MODES,
    RUBRIC_TYPES,
    AnalysisConfig,
    Criterion,
    DataField,
    SuccessRubric,
)
from graphql_api.analysis.pricing import PRICES, known_models
from graphql_api.errors import BadUserInput

# The parts of an analysis config, as a version stores them and a rerun snapshots them.
PROMPT_KEYS = ("summary_prompt", "successful_prompt", "user_sentiment_prompt")
CONFIG_KEYS = (*PROMPT_KEYS, "data_fields", "model", "success_rubric", "rationale")
MAX_CRITERIA = 20
NUMERIC_SCALE = (0, 1000)  # the widest numeric scale a rubric may use
MAX_PROMPT_CHARS = 4_000
MAX_FIELDS = 50
MAX_DESCRIPTION_CHARS = 2_000
MAX_EXAMPLES = 10
MAX_EXAMPLE_CHARS = 200
MAX_CHOICES = 50
MAX_CHOICE_CHARS = 100
FIELD_TYPES = ("STRING", "ENUM", "BOOLEAN", "NUMBER")
# Usable as a JSON key in every client language and as a response-schema property name.
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# The preset outputs share the response object with the custom fields.
RESERVED_NAMES = {"summary", "successful", "user_sentiment", "in_voicemail", "custom_data"}


def validate_prompt(value: str | None, *, argument: str) -> str | None:
    """None means the built-in default; an empty or blank prompt is refused rather than guessed at."""
    if value is None:
        return None
    if not value.strip():
        raise BadUserInput(f"`{argument}` is empty; pass null to use the built-in default.", argument=argument)
    if len(value) > MAX_PROMPT_CHARS:
        raise BadUserInput(
            f"`{argument}` is {len(value)} characters; the limit is {MAX_PROMPT_CHARS}.", argument=argument
        )
    return value


def validate_model(model: str, *, argument: str = "model") -> str:
    if model not in PRICES:
        raise BadUserInput(
            f"Unknown analysis model {model!r}; choose one of {', '.join(known_models())}.", argument=argument
        )
    return model


def validate_data_fields(fields: list[dict[str, Any]], *, argument: str = "dataFields") -> list[DataField]:
    """Check a whole list of data fields; the first problem is reported with the field's position and name."""
    if len(fields) > MAX_FIELDS:
        raise BadUserInput(f"`{argument}` has {len(fields)} fields; the limit is {MAX_FIELDS}.", argument=argument)
    seen: set[str] = set()
    out = []
    for i, raw in enumerate(fields):
        where = f"{argument}[{i}]"
        name = raw.get("name")
        if not isinstance(name, str) or not FIELD_NAME.match(name):
            raise BadUserInput(
                f"`{where}.name` {name!r} must start with a letter or _ and hold only letters, digits and _ (64 at most).",
                argument=f"{where}.name",
            )
        where = f"{argument}[{i}] ({name})"
        if name in RESERVED_NAMES:
            raise BadUserInput(f"`{where}`: {name!r} is a built-in analysis output; pick another name.", argument=f"{argument}[{i}].name")
        if name.lower() in seen:
            raise BadUserInput(f"`{where}`: the name {name!r} is used twice.", argument=f"{argument}[{i}].name")
        seen.add(name.lower())
        ftype = raw.get("type")
        if ftype not in FIELD_TYPES:
            raise BadUserInput(f"`{where}.type` must be one of {', '.join(FIELD_TYPES)}.", argument=f"{argument}[{i}].type")
        description = raw.get("description") or ""
        if len(description) > MAX_DESCRIPTION_CHARS:
            raise BadUserInput(
                f"`{where}.description` is longer than {MAX_DESCRIPTION_CHARS} characters.", argument=f"{argument}[{i}].description"
            )
        examples = list(raw.get("examples") or [])
        if len(examples) > MAX_EXAMPLES or any(not isinstance(e, str) or len(e) > MAX_EXAMPLE_CHARS for e in examples):
            raise BadUserInput(
                f"`{where}.examples` takes at most {MAX_EXAMPLES} strings of {MAX_EXAMPLE_CHARS} characters.",
                argument=f"{argument}[{i}].examples",
            )
        choices = raw.get("choices")
        if ftype == "ENUM":
            if not choices:
                raise BadUserInput(f"`{where}` is an ENUM and needs a non-empty `choices` list.", argument=f"{argument}[{i}].choices")
            if len(choices) > MAX_CHOICES or any(not isinstance(c, str) or not c.strip() or len(c) > MAX_CHOICE_CHARS for c in choices):
                raise BadUserInput(
                    f"`{where}.choices` takes 1 to {MAX_CHOICES} non-empty strings of {MAX_CHOICE_CHARS} characters at most.",
                    argument=f"{argument}[{i}].choices",
                )
            if len(set(choices)) != len(choices):
                raise BadUserInput(f"`{where}.choices` has duplicates.", argument=f"{argument}[{i}].choices")
        elif choices is not None:
            raise BadUserInput(f"`{where}` is {ftype}; only ENUM fields take `choices`.", argument=f"{argument}[{i}].choices")
        out.append(
            DataField(
                name=name,
                type=ftype,
                description=description,
                examples=tuple(examples),
                choices=tuple(choices) if choices is not None else None,
                required=bool(raw.get("required", False)),
            )
        )
    return out


def validate_rationale(value: str | None, *, argument: str = "rationale") -> str:
    if value is None:
        return "NONE"
    if value not in RATIONALE_MODES:
        raise BadUserInput(f"`{argument}` must be one of {', '.join(RATIONALE_MODES)}.", argument=argument)
    return value


def validate_rubric(raw: dict[str, Any] | None, *, argument: str = "successRubric") -> SuccessRubric | None:
    """Check a whole rubric; None (the plain yes/no `successful` prompt) is always fine."""
    if raw is None:
        return None
    kind = raw.get("type")
    if kind not in RUBRIC_TYPES:
        raise BadUserInput(f"`{argument}.type` must be one of {', '.join(RUBRIC_TYPES)}.", argument=f"{argument}.type")
    threshold = raw.get("threshold")
    scale_min, scale_max = raw.get("scale_min"), raw.get("scale_max")
    criteria_raw = list(raw.get("criteria") or [])

    def refuse(message: str, part: str) -> BadUserInput:
        return BadUserInput(f"`{argument}.{part}` {message}", argument=f"{argument}.{part}")

    if kind != "NUMERIC" and (scale_min is not None or scale_max is not None):
        raise refuse(f"is for NUMERIC rubrics only; a {kind} rubric has its own scale.", "scaleMin")
    if kind != "CHECKLIST" and criteria_raw:
        raise refuse(f"are for CHECKLIST rubrics only.", "criteria")
    if kind == "PASS_FAIL" and threshold is not None:
        raise refuse("does not apply to PASS_FAIL: a pass is a success.", "threshold")
    if kind == "NUMERIC":
        if scale_min is None or scale_max is None:
            raise refuse("and scaleMax are required for a NUMERIC rubric, e.g. 1 and 10.", "scaleMin")
        if not (NUMERIC_SCALE[0] <= scale_min < scale_max <= NUMERIC_SCALE[1]):
            raise refuse(f"must be below scaleMax, both within {NUMERIC_SCALE[0]}..{NUMERIC_SCALE[1]}.", "scaleMin")
        if threshold is None or not (scale_min <= threshold <= scale_max):
            raise refuse(f"is required for a NUMERIC rubric, within its scale {scale_min}..{scale_max}.", "threshold")
    if kind == "PERCENTAGE" and (threshold is None or not (0 <= threshold <= 100)):
        raise refuse("is required for a PERCENTAGE rubric, within 0..100.", "threshold")
    if kind == "LIKERT" and threshold is not None and threshold not in (1, 2, 3, 4, 5):
        raise refuse("of a LIKERT rubric is a level from 1 (strongly disagree) to 5 (strongly agree); default 4.",
                     "threshold")
    criteria: list[Criterion] = []
    if kind == "CHECKLIST":
        if not criteria_raw or len(criteria_raw) > MAX_CRITERIA:
            raise refuse(f"takes 1 to {MAX_CRITERIA} criteria for a CHECKLIST rubric.", "criteria")
        seen: set[str] = set()
        for i, c in enumerate(criteria_raw):
            name, prompt = c.get("name"), c.get("prompt")
            if not isinstance(name, str) or not FIELD_NAME.match(name):
                raise refuse(f"{name!r} must start with a letter or _ and hold only letters, digits and _ (64 at most).",
                             f"criteria[{i}].name")
            if name.lower() in seen:
                raise refuse(f"{name!r} is used twice.", f"criteria[{i}].name")
            seen.add(name.lower())
            if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
                raise refuse(f"must say what the criterion checks, in 1 to {MAX_PROMPT_CHARS} characters.",
                             f"criteria[{i}].prompt")
            criteria.append(Criterion(name, prompt))
        if threshold is not None and (threshold != int(threshold) or not (1 <= threshold <= len(criteria))):
            raise refuse(f"of a CHECKLIST rubric is how many criteria must be met: 1..{len(criteria)} (default all).",
                         "threshold")
    return SuccessRubric(type=kind, threshold=threshold, scale_min=scale_min, scale_max=scale_max,
                         criteria=tuple(criteria))


def effective_config(row: Any) -> AnalysisConfig:
    """The config an analyzer sees for an agent_versions row (or a rerun job's snapshot, which may predate the
    rubric and rationale keys)."""
    kwargs: dict[str, Any] = {
        "model": row["model"],
        "data_fields": tuple(DataField.from_json(f) for f in row["data_fields"]),
        "success_rubric": SuccessRubric.from_json(optional_key(row, "success_rubric")),
        "rationale": optional_key(row, "rationale") or "NONE",
    }
    for key in PROMPT_KEYS:
        if row[key] is not None:
            kwargs[key] = row[key]
    return AnalysisConfig(**kwargs)


def optional_key(row: Any, key: str) -> Any:
    """A config key that rows and snapshots written before it existed lack."""
    try:
        return row[key]
    except KeyError:
        return None
