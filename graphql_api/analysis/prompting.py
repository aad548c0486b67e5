"""Prompt building for LLM analysis: system instruction, response schema, transcript, token estimates, output parsing.

Everything here is pure and deterministic, so the Gemini analyzer, the cost estimator and the tests share it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from graphql_api.analysis.base import (
    CRITERION_PREFIX,
    CUSTOM_PREFIX,
    IN_VOICEMAIL,
    LIKERT_LEVELS,
    SUCCESSFUL,
    SUMMARY,
    USER_SENTIMENT,
    VERDICTS,
    AnalysisConfig,
    AnalysisError,
    Conversation,
    ConversationKind,
    DataField,
    SuccessRubric,
)

SENTIMENTS: tuple[str, ...] = ("NEGATIVE", "NEUTRAL", "POSITIVE", "UNKNOWN")

VOICEMAIL_PROMPT = (
    "Whether the call reached voicemail or an answering machine instead of a live person: true or false."
)
EMPTY_TRANSCRIPT = "(The conversation has no transcript.)"

# Output allowance for the estimate: the presets (a 1-3 sentence summary and three small values)
# plus a per-custom-field allowance. Deliberately generous: an estimate that is too low is worse.
OUTPUT_TOKENS_BASE = 160
OUTPUT_TOKENS_PER_FIELD = 40
# A narrowed request (some outputs only) is allowed per preset output instead: the summary is most of it.
OUTPUT_TOKENS_PER_PRESET = {SUMMARY: 100, SUCCESSFUL: 20, USER_SENTIMENT: 20, IN_VOICEMAIL: 20}
OUTPUT_TOKENS_PER_CRITERION = 15
OUTPUT_TOKENS_PER_RATIONALE = 60  # a one-sentence reason, a short quote and a turn number
CHARS_PER_TOKEN = 4

_SCHEMA_TYPES = {"STRING": "STRING", "ENUM": "STRING", "BOOLEAN": "BOOLEAN", "NUMBER": "NUMBER"}


def _noun(kind: ConversationKind) -> str:
    return "phone or web call" if kind == "CALL" else "chat"


def _quote_list(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(json.dumps(v, ensure_ascii=False) for v in values)


def build_system_instruction(config: AnalysisConfig, kind: ConversationKind) -> str:
    """The instructions sent as the system instruction: the config's prompts and every custom field."""
    lines = [
        f"You analyze the transcript of a {_noun(kind)} between an AI agent and a user, after it ended.",
        "Answer with one JSON object that follows the response schema exactly: no prose, no markdown.",
        "",
        "Fields to return:",
    ]
    if config.asks(SUMMARY):
        lines.append(f"- summary (string): {config.summary_prompt}")
    if config.asks(SUCCESSFUL):
        if config.success_rubric is None:
            lines.append(f"- successful (boolean): {config.successful_prompt}")
        else:
            lines += _rubric_lines(config.success_rubric, config.successful_prompt)
    if config.asks(USER_SENTIMENT):
        lines.append(f"- user_sentiment (one of {', '.join(SENTIMENTS)}): {config.user_sentiment_prompt}")
    if kind == "CALL" and config.asks(IN_VOICEMAIL):
        lines.append(f"- in_voicemail (boolean): {VOICEMAIL_PROMPT}")
    fields = config.asked_fields()
    if fields:
        lines += [
            "- custom_data (object): extract these fields from the transcript.",
            "  Use null for a field the transcript does not tell; never invent a value.",
        ]
        for f in fields:
            lines.append(f"  - {f.name} ({_field_type_text(f)}, {'required' if f.required else 'optional'})"
                         + (f": {f.description}" if f.description else ""))
            if f.type == "ENUM" and f.choices:
                lines.append(f"    Answer exactly one of: {_quote_list(f.choices)}.")
            if f.examples:
                lines.append(f"    Examples: {_quote_list(f.examples)}.")
    explained = _explained(config)
    if explained:
        lines += [
            "- rationale (object): why you answered as you did, for " + ", ".join(explained) + ".",
            "  Each is {reason, quote, turn}: reason in one short sentence; quote: words copied exactly from the",
            "  transcript that support it (null when none does); turn: the 1-based number of the transcript line",
            "  the quote comes from (null without a quote).",
        ]
    return "\n".join(lines)


def _rubric_lines(rubric: SuccessRubric, prompt: str) -> list[str]:
    """How the model is asked to judge success on a rubric; the success prompt says what is judged."""
    if rubric.type == "PASS_FAIL":
        return [f"- evaluation.verdict (SUCCESS, FAILURE, or UNKNOWN when the transcript does not tell): {prompt}"]
    if rubric.type == "NUMERIC":
        return [f"- evaluation.score (an integer from {rubric.scale_min} to {rubric.scale_max}, higher is better; null "
                f"when the transcript does not tell): {prompt}"]
    if rubric.type == "PERCENTAGE":
        return [f"- evaluation.score (a percentage from 0 to 100, higher is better; null when the transcript does not "
                f"tell): {prompt}"]
    if rubric.type == "LIKERT":
        return [f"- evaluation.level (how much you agree with this statement: {', '.join(LIKERT_LEVELS)}, or UNKNOWN "
                f"when the transcript does not tell): {prompt}"]
    lines = [f"- evaluation.criteria (object): judge each criterion: SUCCESS when it is met, FAILURE when it is not, "
             f"UNKNOWN when the transcript does not tell. The overall goal: {prompt}"]
    lines += [f"  - {c.name}: {c.prompt}" for c in rubric.criteria]
    return lines


def _explained(config: AnalysisConfig) -> list[str]:
    """The response's names of the outputs that come with a rationale, in response order."""
    names: list[str] = []
    if config.explains(SUCCESSFUL):
        rubric = config.success_rubric
        if rubric is not None and rubric.type == "CHECKLIST":
            names += [f"criteria.{c.name}" for c in rubric.criteria]
        else:
            names.append("successful")
    if config.explains(USER_SENTIMENT):
        names.append("user_sentiment")
    names += [f"custom_data.{f.name}" for f in config.asked_fields() if config.explains(CUSTOM_PREFIX + f.name)]
    return names


_REASON_SCHEMA_DESCRIPTION = "A short reason grounded in the transcript."


def _rationale_schema() -> dict[str, Any]:
    return {
        "type": "OBJECT",
        "properties": {
            "reason": {"type": "STRING", "description": _REASON_SCHEMA_DESCRIPTION},
            "quote": {"type": "STRING", "nullable": True, "description": "Words copied exactly from the transcript."},
            "turn": {"type": "INTEGER", "nullable": True, "description": "The 1-based transcript line of the quote."},
        },
        "required": ["reason", "quote", "turn"],
        "propertyOrdering": ["reason", "quote", "turn"],
    }


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    order = list(properties)
    return {"type": "OBJECT", "properties": properties, "required": order, "propertyOrdering": order}


def _evaluation_schema(rubric: SuccessRubric, prompt: str) -> dict[str, Any]:
    if rubric.type == "PASS_FAIL":
        inner = {"verdict": {"type": "STRING", "format": "enum", "enum": list(VERDICTS)}}
    elif rubric.type == "NUMERIC":
        inner = {"score": {"type": "INTEGER", "nullable": True, "minimum": rubric.scale_min, "maximum": rubric.scale_max}}
    elif rubric.type == "PERCENTAGE":
        inner = {"score": {"type": "NUMBER", "nullable": True, "minimum": 0, "maximum": 100}}
    elif rubric.type == "LIKERT":
        inner = {"level": {"type": "STRING", "format": "enum", "enum": [*LIKERT_LEVELS, "UNKNOWN"]}}
    else:
        inner = {"criteria": _object({
            c.name: {"type": "STRING", "format": "enum", "enum": list(VERDICTS), "description": c.prompt}
            for c in rubric.criteria})}
    return {**_object(inner), "description": prompt}


def _field_type_text(f: DataField) -> str:
    return {"STRING": "string", "ENUM": "enum", "BOOLEAN": "boolean", "NUMBER": "number"}[f.type]


def _field_schema(f: DataField) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": _SCHEMA_TYPES[f.type]}
    if f.type == "ENUM":
        schema["format"] = "enum"
        schema["enum"] = list(f.choices or ())
    description = f.description
    if f.examples:
        description = f"{description} Examples: {_quote_list(f.examples)}.".strip()
    if description:
        schema["description"] = description
    if not f.required:
        schema["nullable"] = True
    return schema


def build_response_schema(config: AnalysisConfig, kind: ConversationKind) -> dict[str, Any]:
    """The OpenAPI-subset schema Gemini's `response_schema` accepts; a fresh dict on every call.

    `custom_data` is left out when no data field is asked for: Gemini rejects an OBJECT without properties.
    A narrowed config (`outputs`) gets only the properties it asks for.
    """
    properties: dict[str, Any] = {}
    if config.asks(SUMMARY):
        properties["summary"] = {"type": "STRING", "description": config.summary_prompt}
    if config.asks(SUCCESSFUL):
        if config.success_rubric is None:
            properties["successful"] = {"type": "BOOLEAN", "description": config.successful_prompt}
        else:
            properties["evaluation"] = _evaluation_schema(config.success_rubric, config.successful_prompt)
    if config.asks(USER_SENTIMENT):
        properties["user_sentiment"] = {
            "type": "STRING",
            "format": "enum",
            "enum": list(SENTIMENTS),
            "description": config.user_sentiment_prompt,
        }
    if kind == "CALL" and config.asks(IN_VOICEMAIL):
        properties["in_voicemail"] = {"type": "BOOLEAN", "description": VOICEMAIL_PROMPT}
    fields = config.asked_fields()
    if fields:
        names = [f.name for f in fields]
        properties["custom_data"] = {
            "type": "OBJECT",
            "properties": {f.name: _field_schema(f) for f in fields},
            "required": names,
            "propertyOrdering": names,
        }
    rationale = _rationale_properties(config)
    if rationale:
        properties["rationale"] = _object(rationale)
    return _object(properties)


def _rationale_properties(config: AnalysisConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if config.explains(SUCCESSFUL):
        rubric = config.success_rubric
        if rubric is not None and rubric.type == "CHECKLIST":
            out["criteria"] = _object({c.name: _rationale_schema() for c in rubric.criteria})
        else:
            out["successful"] = _rationale_schema()
    if config.explains(USER_SENTIMENT):
        out["user_sentiment"] = _rationale_schema()
    fields = [f for f in config.asked_fields() if config.explains(CUSTOM_PREFIX + f.name)]
    if fields:
        out["custom_data"] = _object({f.name: _rationale_schema() for f in fields})
    return out


def render_transcript(conversation: Conversation) -> str:
    """The content sent to the model: one "Agent: ..." / "User: ..." line per utterance, else the transcript text."""
    if conversation.utterances:
        text = "\n".join(
            f"{'Agent' if u.role == 'agent' else 'User'}: {u.content.strip()}"
            for u in conversation.utterances
            if u.content and u.content.strip()
        )
        if text:
            return text
    text = (conversation.transcript or "").strip()
    return text or EMPTY_TRANSCRIPT


def estimate_tokens(chars: int) -> int:
    """The tokens of a text of `chars` characters: about four characters per token, rounded up, at least one."""
    return max(1, math.ceil(chars / CHARS_PER_TOKEN))


def estimate_usage(
    config: AnalysisConfig, kind: ConversationKind, *, conversations: int, transcript_chars: int
) -> tuple[int, int]:
    """Estimated (input, output) tokens of analyzing `conversations` conversations, whose transcripts hold
    `transcript_chars` characters in all, with one config: each is sent with the instructions and the response
    schema, and may answer up to the output allowance."""
    if conversations == 0:
        return 0, 0
    schema_text = json.dumps(build_response_schema(config, kind), separators=(",", ":"))
    per_conversation = estimate_tokens(len(build_system_instruction(config, kind))) + estimate_tokens(len(schema_text))
    input_tokens = per_conversation * conversations + estimate_tokens(transcript_chars)
    if config.outputs is None:
        presets = OUTPUT_TOKENS_BASE
    else:
        presets = sum(n for name, n in OUTPUT_TOKENS_PER_PRESET.items() if name in config.outputs)
    explained = len(_explained(config))
    criteria = len(config.success_rubric.criteria) if config.success_rubric is not None and config.asks(SUCCESSFUL) else 0
    per_conversation_out = (presets + OUTPUT_TOKENS_PER_FIELD * len(config.asked_fields())
                            + OUTPUT_TOKENS_PER_CRITERION * criteria + OUTPUT_TOKENS_PER_RATIONALE * explained)
    return input_tokens, per_conversation_out * conversations


def _fail(message: str) -> AnalysisError:
    return AnalysisError(f"malformed model output: {message}", retryable=False)


def _check_value(f: DataField, value: Any) -> Any:
    if value is None:
        return None
    if f.type == "STRING":
        if not isinstance(value, str):
            raise _fail(f"custom_data.{f.name} must be a string, got {type(value).__name__}")
    elif f.type == "ENUM":
        if not isinstance(value, str) or value not in (f.choices or ()):
            raise _fail(f"custom_data.{f.name} must be one of {list(f.choices or ())}, got {value!r}")
    elif f.type == "BOOLEAN":
        if not isinstance(value, bool):
            raise _fail(f"custom_data.{f.name} must be a boolean, got {type(value).__name__}")
    elif f.type == "NUMBER":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _fail(f"custom_data.{f.name} must be a number, got {value!r}")
    return value


def parse_model_output(text: str, config: AnalysisConfig, kind: ConversationKind, transcript: str = "") -> dict[str, Any]:
    """Validate the model's JSON strictly and return the typed result.

    Returns `summary`, `successful`, `user_sentiment`, `in_voicemail` (None for chats) and `custom_data`
    (every config field, None when missing or null; unknown keys dropped). A narrowed config (`outputs`) expects
    only what it asked for: the rest is None and custom_data holds the fields asked for. Raises a non-retryable
    AnalysisError naming the field on anything else.
    """
    try:
        raw = json.loads(text)
    except (TypeError, ValueError) as exc:
        snippet = (text or "")[:80]
        raise _fail(f"not valid JSON ({exc}): {snippet!r}") from None
    if not isinstance(raw, dict):
        raise _fail(f"expected a JSON object, got {type(raw).__name__}")

    def preset(name: str, typ: type, type_name: str) -> Any:
        if name not in raw:
            raise _fail(f"missing field {name}")
        value = raw[name]
        if not isinstance(value, typ):
            raise _fail(f"{name} must be {type_name}, got {type(value).__name__}")
        return value

    summary = preset("summary", str, "a string") if config.asks(SUMMARY) else None
    evaluation = None
    if not config.asks(SUCCESSFUL):
        successful = None
    elif config.success_rubric is None:
        successful = preset("successful", bool, "a boolean")
    else:
        evaluation, successful = parse_evaluation(preset("evaluation", dict, "an object"), config.success_rubric)
    sentiment = preset("user_sentiment", str, "a string") if config.asks(USER_SENTIMENT) else None
    if sentiment is not None and sentiment not in SENTIMENTS:
        raise _fail(f"user_sentiment must be one of {list(SENTIMENTS)}, got {sentiment!r}")
    asks_voicemail = kind == "CALL" and config.asks(IN_VOICEMAIL)
    in_voicemail = preset("in_voicemail", bool, "a boolean") if asks_voicemail else None

    custom_data: dict[str, Any] = {}
    fields = config.asked_fields()
    if fields:
        custom_raw = preset("custom_data", dict, "an object")
        custom_data = {f.name: _check_value(f, custom_raw.get(f.name)) for f in fields}

    rationale = None
    if _explained(config):
        rationale = _parse_rationale(preset("rationale", dict, "an object"), config, transcript)

    return {
        "summary": summary,
        "successful": successful,
        "user_sentiment": sentiment,
        "in_voicemail": in_voicemail,
        "custom_data": custom_data,
        "evaluation": evaluation,
        "rationale": rationale,
    }


def parse_evaluation(raw: dict[str, Any], rubric: SuccessRubric) -> tuple[dict[str, Any], bool | None]:
    """The stored evaluation (analysis_results.evaluation) and whether it is a success: score >= threshold; None
    when the model could not tell (an UNKNOWN verdict or level, a null score)."""
    threshold = rubric.effective_threshold()
    threshold = float(threshold) if threshold is not None else None  # scores and thresholds are stored as floats
    evaluation: dict[str, Any] = {"type": rubric.type, "threshold": threshold}
    score: float | None
    if rubric.type == "PASS_FAIL":
        verdict = raw.get("verdict")
        if verdict not in VERDICTS:
            raise _fail(f"evaluation.verdict must be one of {list(VERDICTS)}, got {verdict!r}")
        evaluation["verdict"] = verdict
        score = None if verdict == "UNKNOWN" else float(verdict == "SUCCESS")
        evaluation["score"] = score
        return evaluation, None if score is None else score == 1.0
    if rubric.type in ("NUMERIC", "PERCENTAGE"):
        low, high = (rubric.scale_min, rubric.scale_max) if rubric.type == "NUMERIC" else (0, 100)
        score = raw.get("score")
        if score is not None:
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise _fail(f"evaluation.score must be a number, got {score!r}")
            if rubric.type == "NUMERIC" and score != int(score):
                raise _fail(f"evaluation.score must be a whole number on the scale, got {score!r}")
            if not (low <= score <= high):
                raise _fail(f"evaluation.score must be within {low}..{high}, got {score!r}")
            score = float(score)
        evaluation.update(score=score, scale_min=low, scale_max=high)
    elif rubric.type == "LIKERT":
        level = raw.get("level")
        if level not in (*LIKERT_LEVELS, "UNKNOWN"):
            raise _fail(f"evaluation.level must be one of {[*LIKERT_LEVELS, 'UNKNOWN']}, got {level!r}")
        score = None if level == "UNKNOWN" else float(LIKERT_LEVELS.index(level) + 1)
        evaluation.update(level=level, score=score, scale_min=1, scale_max=5)
    else:
        verdicts = raw.get("criteria")
        if not isinstance(verdicts, dict):
            raise _fail("evaluation.criteria must be an object")
        criteria = []
        for c in rubric.criteria:
            verdict = verdicts.get(c.name)
            if verdict not in VERDICTS:
                raise _fail(f"evaluation.criteria.{c.name} must be one of {list(VERDICTS)}, got {verdict!r}")
            criteria.append({"name": c.name, "verdict": verdict})
        score = float(sum(1 for c in criteria if c["verdict"] == "SUCCESS"))
        evaluation.update(criteria=criteria, score=score, scale_min=0, scale_max=len(criteria))
    if score is None:
        return evaluation, None
    return evaluation, threshold is not None and score >= threshold


def _normalized(text: str) -> str:
    return " ".join(text.split()).casefold()


def _parse_rationale(raw: dict[str, Any], config: AnalysisConfig, transcript: str) -> dict[str, Any]:
    """Rationale keyed by output name (successful, userSentiment, customData.<name>, criterion.<name>), each
    {reason, quote, turn, quote_found}: quote_found tells whether the quote really is in the transcript."""
    haystack = _normalized(transcript)
    out: dict[str, Any] = {}

    def take(value: Any, where: str, output: str) -> None:
        if not isinstance(value, dict) or not isinstance(value.get("reason"), str):
            raise _fail(f"rationale.{where} must be an object with a reason")
        quote, turn = value.get("quote"), value.get("turn")
        if quote is not None and not isinstance(quote, str):
            raise _fail(f"rationale.{where}.quote must be a string or null")
        if turn is not None and (isinstance(turn, bool) or not isinstance(turn, int)):
            raise _fail(f"rationale.{where}.turn must be an integer or null")
        found = bool(quote and quote.strip() and _normalized(quote) in haystack)
        out[output] = {"reason": value["reason"], "quote": quote or None, "turn": turn, "quote_found": found}

    for name in _explained(config):
        head, _, rest = name.partition(".")
        if head == "criteria":
            take((raw.get("criteria") or {}).get(rest), name, CRITERION_PREFIX + rest)
        elif head == "custom_data":
            take((raw.get("custom_data") or {}).get(rest), name, CUSTOM_PREFIX + rest)
        else:
            take(raw.get(head), name, SUCCESSFUL if head == "successful" else USER_SENTIMENT)
    return out
