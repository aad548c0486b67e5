"""Prompt building for LLM analysis: system instruction, response schema, transcript, token estimates, output parsing.

Everything here is pure and deterministic, so the Gemini analyzer, the cost estimator and the tests share it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from graphql_api.analysis.base import (
    IN_VOICEMAIL,
    SUCCESSFUL,
    SUMMARY,
    USER_SENTIMENT,
    AnalysisConfig,
    AnalysisError,
    Conversation,
    ConversationKind,
    DataField,
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
        lines.append(f"- successful (boolean): {config.successful_prompt}")
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
    return "\n".join(lines)


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
        properties["successful"] = {"type": "BOOLEAN", "description": config.successful_prompt}
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
    order = list(properties)
    return {"type": "OBJECT", "properties": properties, "required": order, "propertyOrdering": order}


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
    output_tokens = (presets + OUTPUT_TOKENS_PER_FIELD * len(config.asked_fields())) * conversations
    return input_tokens, output_tokens


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


def parse_model_output(text: str, config: AnalysisConfig, kind: ConversationKind) -> dict[str, Any]:
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
    successful = preset("successful", bool, "a boolean") if config.asks(SUCCESSFUL) else None
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

    return {
        "summary": summary,
        "successful": successful,
        "user_sentiment": sentiment,
        "in_voicemail": in_voicemail,
        "custom_data": custom_data,
    }
