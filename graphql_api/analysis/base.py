"""The analyzer interface: the shapes that go in (conversation, config) and come out (outcome)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

FieldType = Literal["STRING", "ENUM", "BOOLEAN", "NUMBER"]
Sentiment = Literal["NEGATIVE", "NEUTRAL", "POSITIVE", "UNKNOWN"]
ConversationKind = Literal["CALL", "CHAT"]

DEFAULT_SUMMARY_PROMPT = "Write a 1 to 3 sentence summary of the conversation based on the transcript."
DEFAULT_SUCCESSFUL_PROMPT = (
    "Evaluate whether the agent had a successful conversation with the user: the agent finished "
    "the task it was given and the conversation did not end in voicemail, an error or an unresolved problem."
)
DEFAULT_USER_SENTIMENT_PROMPT = (
    "Evaluate the user's sentiment, mood and satisfaction level during the conversation: "
    "NEGATIVE, NEUTRAL or POSITIVE, or UNKNOWN when the transcript does not tell."
)


@dataclass(frozen=True)
class DataField:
    """One custom extraction field of an analysis config."""

    name: str
    type: FieldType
    description: str = ""
    examples: tuple[str, ...] = ()
    choices: tuple[str, ...] | None = None
    required: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "description": self.description,
            "examples": list(self.examples),
            "choices": list(self.choices) if self.choices is not None else None,
            "required": self.required,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DataField:
        choices = raw.get("choices")
        return cls(
            name=raw["name"],
            type=raw["type"],
            description=raw.get("description") or "",
            examples=tuple(raw.get("examples") or ()),
            choices=tuple(choices) if choices is not None else None,
            required=bool(raw.get("required", False)),
        )


RubricType = Literal["PASS_FAIL", "NUMERIC", "PERCENTAGE", "LIKERT", "CHECKLIST"]
RUBRIC_TYPES: tuple[str, ...] = ("PASS_FAIL", "NUMERIC", "PERCENTAGE", "LIKERT", "CHECKLIST")
# A verdict on a pass/fail rubric or one checklist criterion.
VERDICTS: tuple[str, ...] = ("SUCCESS", "FAILURE", "UNKNOWN")
# A Likert answer to the success statement, scored 1..5.
LIKERT_LEVELS: tuple[str, ...] = ("STRONGLY_DISAGREE", "DISAGREE", "NEUTRAL", "AGREE", "STRONGLY_AGREE")
# Which outputs come back with a rationale: none, the evaluations (successful or its rubric's criteria, and the
# sentiment), or those and every custom data field.
RATIONALE_MODES: tuple[str, ...] = ("NONE", "EVALUATIONS", "ALL")


@dataclass(frozen=True)
class Criterion:
    """One named criterion of a checklist rubric, judged on its own prompt."""

    name: str
    prompt: str


@dataclass(frozen=True)
class SuccessRubric:
    """How success is judged instead of the plain yes/no `successful` prompt.

    The model answers on the rubric's scale (the success prompt says what is judged); the score is a number on that
    scale (pass/fail: 1 or 0; Likert: 1..5; checklist: the criteria met) and `successful` is score >= threshold.
    """

    type: RubricType
    threshold: float | None = None  # the lowest score that counts as successful; PASS_FAIL has none
    scale_min: int | None = None  # NUMERIC only
    scale_max: int | None = None
    criteria: tuple[Criterion, ...] = ()  # CHECKLIST only

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "threshold": self.threshold,
            "scale_min": self.scale_min,
            "scale_max": self.scale_max,
            "criteria": [{"name": c.name, "prompt": c.prompt} for c in self.criteria],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> SuccessRubric | None:
        if not raw:
            return None
        return cls(
            type=raw["type"],
            threshold=raw.get("threshold"),
            scale_min=raw.get("scale_min"),
            scale_max=raw.get("scale_max"),
            criteria=tuple(Criterion(c["name"], c["prompt"]) for c in raw.get("criteria") or ()),
        )

    def effective_threshold(self) -> float | None:
        """The threshold that applies: the one set, else the default of the type (Likert: AGREE; checklist: all)."""
        if self.threshold is not None:
            return self.threshold
        if self.type == "LIKERT":
            return 4
        if self.type == "CHECKLIST":
            return len(self.criteria)
        return None


# The names of a config's outputs, as a rerun's `fields` and a result's provenance spell them: the presets in
# AnalysisResult's GraphQL spelling, and each custom data field as "customData.<name>".
SUMMARY, SUCCESSFUL, USER_SENTIMENT, IN_VOICEMAIL = "summary", "successful", "userSentiment", "inVoicemail"
CUSTOM_PREFIX = "customData."
# A checklist criterion's rationale is keyed "criterion.<name>".
CRITERION_PREFIX = "criterion."


@dataclass(frozen=True)
class AnalysisConfig:
    """The effective config of one agent version: defaults already applied to unset prompts.

    `outputs` narrows a request to some outputs (a rerun of only what changed): the model is asked for those
    alone, with a smaller prompt and response schema. None asks for all of them.
    """

    model: str
    summary_prompt: str = DEFAULT_SUMMARY_PROMPT
    successful_prompt: str = DEFAULT_SUCCESSFUL_PROMPT
    user_sentiment_prompt: str = DEFAULT_USER_SENTIMENT_PROMPT
    data_fields: tuple[DataField, ...] = ()
    success_rubric: SuccessRubric | None = None
    rationale: str = "NONE"  # one of RATIONALE_MODES
    outputs: frozenset[str] | None = None

    def asks(self, output: str) -> bool:
        """Whether a request with this config asks the model for `output`."""
        return self.outputs is None or output in self.outputs

    def asked_fields(self) -> tuple[DataField, ...]:
        """The custom data fields this request asks for."""
        return tuple(f for f in self.data_fields if self.asks(CUSTOM_PREFIX + f.name))

    def explains(self, output: str) -> bool:
        """Whether the answer for `output` (asked for) comes with a rationale."""
        if self.rationale == "NONE" or not self.asks(output):
            return False
        return output in (SUCCESSFUL, USER_SENTIMENT) or (self.rationale == "ALL" and output.startswith(CUSTOM_PREFIX))


def output_names(config: AnalysisConfig, kind: ConversationKind) -> tuple[str, ...]:
    """Every output a full analysis of a `kind` conversation with `config` produces, in response order."""
    presets = (SUMMARY, SUCCESSFUL, USER_SENTIMENT) + ((IN_VOICEMAIL,) if kind == "CALL" else ())
    return presets + tuple(CUSTOM_PREFIX + f.name for f in config.data_fields)


def with_dependencies(outputs: set[str], config: AnalysisConfig) -> set[str]:
    """`outputs` plus what they imply: a required field recomputed recomputes `successful`, which it decides."""
    required = {CUSTOM_PREFIX + f.name for f in config.data_fields if f.required}
    return outputs | {SUCCESSFUL} if outputs & required else set(outputs)


@dataclass(frozen=True)
class Utterance:
    role: Literal["agent", "user"]
    content: str


@dataclass(frozen=True)
class Conversation:
    """What an analyzer may read of a call or chat."""

    id: str
    kind: ConversationKind
    transcript: str
    utterances: tuple[Utterance, ...] = ()
    status: str | None = None
    disconnection_reason: str | None = None


@dataclass
class AnalysisOutcome:
    """A typed analysis result with the usage that produced it.

    `evaluation` is the rubric's answer when the config has one (its JSON as analysis_results.evaluation stores
    it); `rationale` maps output names (successful, userSentiment, customData.<name>, criterion.<name>) to
    {reason, quote, turn, quote_found} when the config asks for rationale.
    """

    model: str
    summary: str | None
    successful: bool | None
    user_sentiment: Sentiment | None  # None only when a narrowed request did not ask for it
    in_voicemail: bool | None
    custom_data: dict[str, Any] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    evaluation: dict[str, Any] | None = None
    rationale: dict[str, Any] | None = None


@dataclass(frozen=True)
class Usage:
    """What one model invocation consumed, as the model's response reported it."""

    model: str
    input_tokens: int
    output_tokens: int


class AnalysisError(Exception):
    """The analysis of one conversation failed; `retryable` says whether trying again may help.

    `usage` is set when the model answered (its tokens were spent) but the answer was not usable;
    a failure that never reached the model has none.
    """

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None, usage: Usage | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.usage = usage


class Analyzer(Protocol):
    name: str

    async def analyze(self, conversation: Conversation, config: AnalysisConfig) -> AnalysisOutcome: ...


def apply_required_fields(outcome: AnalysisOutcome, config: AnalysisConfig) -> AnalysisOutcome:
    """A required field left empty makes the conversation unsuccessful (product rule).

    A narrowed request applies it to the fields it asked for; the rerun that merges such a result with the current
    one applies it again over the merged fields (finish_rerun_item, migration 012)."""
    if not config.asks(SUCCESSFUL):
        return outcome
    for f in config.asked_fields():
        if f.required and outcome.custom_data.get(f.name) in (None, ""):
            outcome.successful = False
    return outcome


# ---- batches: many requests sent as one provider batch (graphql_api.analysis.batch) ----------------------------

BatchStateName = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"]
ENDED_STATES: frozenset[str] = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"})


@dataclass(frozen=True)
class BatchRequest:
    """One analysis to run in a batch; `key` is the caller's id for it (e.g. "rerun_ab12:17"), unique in the batch."""

    key: str
    conversation: Conversation
    config: AnalysisConfig


@dataclass(frozen=True)
class BatchState:
    """Where a batch is. `error` says why an ended batch did not succeed (FAILED, CANCELLED, EXPIRED)."""

    name: str
    state: BatchStateName
    done: bool
    error: str | None = None
    display_name: str | None = None
    model: str | None = None
    create_time: datetime | None = None
    end_time: datetime | None = None


@dataclass
class BatchResult:
    """What one request of an ended batch gave: an outcome, or an error (exactly one).

    The error carries `usage` when the model answered unusably (its tokens are charged), and `retryable` when
    running the request again may help. `answered` is False for a request the batch never ran (it was cancelled,
    expired or failed first): its error says why, and nothing was charged for it.
    """

    key: str
    outcome: AnalysisOutcome | None = None
    error: AnalysisError | None = None
    answered: bool = True

    def __post_init__(self) -> None:
        if (self.outcome is None) == (self.error is None):
            raise ValueError("a BatchResult has exactly one of outcome and error")
