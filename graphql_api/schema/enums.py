"""The enums of the schema, shared by the object types, the inputs and the filters."""

from __future__ import annotations

from enum import Enum

import strawberry


@strawberry.enum(description="Where an agent talks to people.")
class Channel(Enum):
    VOICE = "VOICE"
    CHAT = "CHAT"


@strawberry.enum(description="What started an analysis run.")
class AnalysisTrigger(Enum):
    INITIAL = "INITIAL"
    RERUN = "RERUN"
    PREVIEW = "PREVIEW"


@strawberry.enum
class UserSentiment(Enum):
    NEGATIVE = "NEGATIVE"
    NEUTRAL = "NEUTRAL"
    POSITIVE = "POSITIVE"
    UNKNOWN = "UNKNOWN"


@strawberry.enum(description="The type of a custom analysis field.")
class DataFieldType(Enum):
    STRING = "STRING"
    ENUM = "ENUM"
    BOOLEAN = "BOOLEAN"
    NUMBER = "NUMBER"


@strawberry.enum(description="Status of a call or chat. Chats are only ONGOING, ENDED or ERROR.")
class ConversationStatus(Enum):
    REGISTERED = "registered"
    NOT_CONNECTED = "not_connected"
    ONGOING = "ongoing"
    ENDED = "ended"
    ERROR = "error"


@strawberry.enum(description="What made an edit of a draft's analysis config.")
class ConfigChangeOrigin(Enum):
    API = "api"  # updateDraftPrompts
    IMPORT = "import"  # `python -m graphql_api import`
    SEED = "seed"  # `python -m graphql_api seed` filling what was missing


@strawberry.enum(description="How success is judged when a config has a rubric (AnalysisConfig.successRubric).")
class RubricType(Enum):
    PASS_FAIL = strawberry.enum_value("PASS_FAIL", description="A verdict: SUCCESS, FAILURE or UNKNOWN.")
    NUMERIC = strawberry.enum_value("NUMERIC", description="A whole number on a scale (scaleMin..scaleMax).")
    PERCENTAGE = strawberry.enum_value("PERCENTAGE", description="A percentage, 0..100.")
    LIKERT = strawberry.enum_value(
        "LIKERT", description="Agreement with the success prompt as a statement, 1 (strongly disagree) to 5."
    )
    CHECKLIST = strawberry.enum_value("CHECKLIST", description="Named criteria, each with its own prompt and verdict.")


@strawberry.enum(description="A verdict on a pass/fail rubric or on one checklist criterion.")
class Verdict(Enum):
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    UNKNOWN = "UNKNOWN"


@strawberry.enum(description="A Likert answer: how much the transcript agrees with the success statement.")
class LikertLevel(Enum):
    STRONGLY_DISAGREE = "STRONGLY_DISAGREE"
    DISAGREE = "DISAGREE"
    NEUTRAL = "NEUTRAL"
    AGREE = "AGREE"
    STRONGLY_AGREE = "STRONGLY_AGREE"
    UNKNOWN = "UNKNOWN"


@strawberry.enum(description="Which outputs of an analysis come with a rationale grounded in the transcript.")
class RationaleMode(Enum):
    NONE = strawberry.enum_value("NONE", description="None (the default).")
    EVALUATIONS = strawberry.enum_value(
        "EVALUATIONS", description="Success (or each checklist criterion) and the user sentiment."
    )
    ALL = strawberry.enum_value("ALL", description="The evaluations and every custom data field.")
