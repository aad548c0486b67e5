"""The offline analyzer: a deterministic, instant, network-free reading of a transcript.

It is the default when no Gemini key is set: an extractive summary that honours the prompt's
length limit, outcome and voicemail cues, a sentiment lexicon, and plainly stated custom fields.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from graphql_api.analysis.base import (
    CRITERION_PREFIX,
    CUSTOM_PREFIX,
    IN_VOICEMAIL,
    SUCCESSFUL,
    SUMMARY,
    USER_SENTIMENT,
    AnalysisConfig,
    AnalysisOutcome,
    Conversation,
    DataField,
    Sentiment,
    SuccessRubric,
    apply_required_fields,
)
from graphql_api.analysis.prompting import estimate_tokens, parse_evaluation

MODEL = "offline"

Event = tuple[tuple[int, int], str]  # ((turn index, offset in the turn), outcome category)


class OfflineAnalyzer:
    """Analyzer with the same interface as the Gemini one; costs nothing and never fails on input."""

    name = "offline"

    async def analyze(self, conversation: Conversation, config: AnalysisConfig) -> AnalysisOutcome:
        return analyze_offline(conversation, config)


def analyze_offline(conversation: Conversation, config: AnalysisConfig) -> AnalysisOutcome:
    """The offline analysis as a pure function: the same input always gives the same outcome."""
    turns = _parse_turns(conversation)
    is_call = conversation.kind == "CALL"
    status = (conversation.status or "").lower()
    has_user = any(t.role == "user" for t in turns)

    not_connected = is_call and (status in ("not_connected", "registered") or not turns)
    voicemail = is_call and not not_connected and _is_voicemail(turns, conversation.disconnection_reason)
    sentiment = _sentiment([t for t in turns if t.role == "user"])
    events = _outcome_events(turns)

    if not_connected:
        label: str | None = "not_connected"
    elif voicemail:
        label = "voicemail"
    elif status == "error":
        label = "error"
    elif status == "ongoing":
        label = "ongoing"
    else:
        label = events[-1][1] if events else None

    if not_connected or voicemail or not has_user or status in ("error", "ongoing"):
        successful = False
    else:
        successful = _successful(events, _goals(config.successful_prompt), sentiment)

    outcome = AnalysisOutcome(
        model=MODEL,
        summary=_summary(turns, conversation.kind, label, events, config.summary_prompt),
        successful=successful,
        user_sentiment=sentiment,
        in_voicemail=voicemail if is_call else None,
        custom_data={f.name: _extract_field(f, turns, events) for f in config.data_fields},
    )
    if config.success_rubric is not None:
        answer = _rubric_answer(config.success_rubric, successful, sentiment, has_user, events)
        outcome.evaluation, outcome.successful = parse_evaluation(answer, config.success_rubric)
    if config.rationale != "NONE":
        outcome.rationale = _rationale(config, outcome, turns, events)
    apply_required_fields(outcome, config)
    if config.outputs is not None:
        _narrow(outcome, config)
    outcome.input_tokens = estimate_tokens(len(_prompt_text(config) + _transcript_text(conversation, turns)))
    result = {
        "summary": outcome.summary,
        "successful": outcome.successful,
        "user_sentiment": outcome.user_sentiment,
        "in_voicemail": outcome.in_voicemail,
        "custom_data": outcome.custom_data,
        "evaluation": outcome.evaluation,
        "rationale": outcome.rationale,
    }
    if config.outputs is not None:  # a narrowed answer holds only what was asked
        asked = {"summary": SUMMARY, "successful": SUCCESSFUL, "user_sentiment": USER_SENTIMENT, "in_voicemail": IN_VOICEMAIL,
                 "evaluation": SUCCESSFUL}
        result = {k: v for k, v in result.items()
                  if (k in ("custom_data", "rationale") and v) or (k in asked and config.asks(asked[k]))}
    outcome.output_tokens = estimate_tokens(len(json.dumps(result, sort_keys=True, ensure_ascii=False, default=str)))
    return outcome


# --- rubrics and rationale --------------------------------------------------------------------


def _rubric_answer(rubric: SuccessRubric, successful: bool, sentiment: Sentiment, has_user: bool,
                   events: list[Event]) -> dict[str, Any]:
    """What a model would answer on the rubric's scale, read from the same cues as `successful`: high when it
    succeeded (highest with a positive user), low when not (lowest with a negative one)."""
    if rubric.type == "PASS_FAIL":
        return {"verdict": "UNKNOWN" if not has_user else "SUCCESS" if successful else "FAILURE"}
    if rubric.type == "LIKERT":
        if not has_user:
            return {"level": "UNKNOWN"}
        if successful:
            return {"level": "STRONGLY_AGREE" if sentiment == "POSITIVE" else "AGREE"}
        return {"level": "STRONGLY_DISAGREE" if sentiment == "NEGATIVE" else "DISAGREE"}
    if rubric.type in ("NUMERIC", "PERCENTAGE"):
        if not has_user:
            return {"score": None}
        low, high = (rubric.scale_min or 0, rubric.scale_max or 10) if rubric.type == "NUMERIC" else (0, 100)
        if successful:
            share = 1.0 if sentiment == "POSITIVE" else 0.8
        else:
            share = 0.0 if sentiment == "NEGATIVE" else 0.3
        return {"score": low + round((high - low) * share)}
    verdicts = {}
    for criterion in rubric.criteria:
        goals = _goals(criterion.prompt)
        verdicts[criterion.name] = "UNKNOWN" if not goals or not has_user else (
            "SUCCESS" if _goal_met(events, goals) else "FAILURE")
    return {"criteria": verdicts}


def _rationale(config: AnalysisConfig, outcome: AnalysisOutcome, turns: list[_Turn],
               events: list[Event]) -> dict[str, Any]:
    """A grounded reason per explained output: the sentence of the transcript the answer rests on, quoted exactly,
    with its 1-based turn."""
    def grounded(reason: str, ti: int | None, pos: int = 0) -> dict[str, Any]:
        if ti is None:
            return {"reason": reason, "quote": None, "turn": None, "quote_found": False}
        start, end = turns[ti].sentence_at(pos)
        return {"reason": reason, "quote": turns[ti].text[start:end].strip(), "turn": ti + 1, "quote_found": True}

    last_event = events[-1][0] if events else None
    user_turns = [i for i, t in enumerate(turns) if t.role == "user"]
    out: dict[str, Any] = {}
    if config.explains(SUCCESSFUL):
        rubric = config.success_rubric
        if rubric is not None and rubric.type == "CHECKLIST":
            for c in (outcome.evaluation or {}).get("criteria", []):
                spot = max((pos for pos, cat in events if cat in _goals(rubric_prompt(rubric, c["name"]))), default=None)
                out[CRITERION_PREFIX + c["name"]] = grounded(
                    f"{c['name']}: {c['verdict'].lower()} by what was said.", *(spot or (None, 0)))
        else:
            verdict = "succeeded" if outcome.successful else "did not succeed"
            out[SUCCESSFUL] = grounded(f"The conversation {verdict}, as this line shows.", *(last_event or (None, 0)))
    if config.explains(USER_SENTIMENT):
        out[USER_SENTIMENT] = grounded(
            f"The user sounded {(outcome.user_sentiment or 'UNKNOWN').lower()} here.", user_turns[-1] if user_turns else None)
    for f in config.asked_fields():
        if config.explains(CUSTOM_PREFIX + f.name):
            value = outcome.custom_data.get(f.name)
            found = None
            if value not in (None, "", True, False):
                needle = str(value).lower()
                found = next(((i, t.low.index(needle)) for i, t in enumerate(turns) if needle in t.low), None)
            reason = "Not stated in the transcript." if value in (None, "") else f"{f.name} is {value}."
            out[CUSTOM_PREFIX + f.name] = grounded(reason, *(found or (None, 0)))
    return out


def rubric_prompt(rubric: SuccessRubric, name: str) -> str:
    return next((c.prompt for c in rubric.criteria if c.name == name), "")


# --- text primitives -------------------------------------------------------------------------

_SPEAKER_RE = re.compile(r"^\s*(agent|assistant|bot|ai|user|customer|caller|human|client)\s*:\s*", re.I)
_AGENT_LABELS = frozenset({"agent", "assistant", "bot", "ai"})
_TOKEN_RE = re.compile(r"\$?\d+(?:,\d{3})*(?:\.\d+)?(?:%|[a-z]+)?|[a-z][a-z0-9]*(?:['.@-][a-z0-9]+)*")
# A sentence ends at . ! or ? followed by a space or the end, so "$19.99" and emails stay whole.
_SENTENCE_RE = re.compile(r"\S.*?(?:[.!?]+(?=\s|$)|$)")
_CLAUSE_BREAK_RE = re.compile(r"[,;:.!?]|\b(?:but|though|although|however)\b")
# Courtesy phrases that contain a negation word but negate nothing.
_COURTESY_RE = re.compile(r"\b(?:no problem|not a problem|no worries|no rush|no trouble)\b")
_PHONE_RE = re.compile(r"\+?\d[\d\s().-]{5,}\d")

_STOPWORDS = frozenset(
    """
    a about above after again all also am an and any are as at be been before being below between both
    but by can could did do does doing done for from further had has have having he her here hers him
    his how i i'd i'll i'm i've if in into is it it's its itself just let let's me more most my myself no
    nor not now of off on once only or other our ours out over please same she should so some such than
    that that's the their them then there there's these they they're they've this those through to too
    under until up us very was we we'd we'll we're we've were what what's when where which while who whom
    why will with would you you'd you'll you're you've your yours yourself hi hello hey thanks thank okay
    ok yes yeah yep sure um uh well oh bye goodbye like want need get got go going call calling calls
    caller callers chat user users customer customers agent agents conversation transcript person
    someone whether kind type many much number value field really actually said say says told ask asked
    don't didn't doesn't can't won't isn't wasn't aren't it'll""".split()
)
# Request verbs and fillers that say nothing about the topic of a summary.
_SUMMARY_FILLER = _STOPWORDS | frozenset(
    """book booking schedule help wondering looking trying hoping see know think maybe still back
    sometime due ideal anything something sorry glad great perfect awesome done set quick question
    possible issued show shows appear appears make made take give put there honestly guess course
    around right""".split()
)
_GREETING_TOKENS = frozenset(
    "hi hello hey there yes yeah yep sure ok okay so um uh well oh great thanks thank perfect right done".split()
)


class _Token:
    __slots__ = ("word", "stem", "start", "end")

    def __init__(self, word: str, start: int, end: int):
        self.word = word
        self.stem = _stem(word)
        self.start = start
        self.end = end


class _Turn:
    __slots__ = ("role", "text", "low", "tokens", "_sentences", "_numbers")

    def __init__(self, role: str, text: str):
        self.role = role
        self.text = text
        # Same length as text, so token offsets index both.
        self.low = text.lower().replace("\u2019", "'").replace("\u2018", "'")
        self.tokens = [_Token(m.group(), m.start(), m.end()) for m in _TOKEN_RE.finditer(self.low)]
        self._sentences: list[tuple[int, int]] | None = None
        self._numbers: list[tuple[int, float | int, bool]] | None = None

    @property
    def sentences(self) -> list[tuple[int, int]]:
        if self._sentences is None:
            self._sentences = [m.span() for m in _SENTENCE_RE.finditer(self.text)]
        return self._sentences

    def sentence_at(self, pos: int) -> tuple[int, int]:
        for start, end in self.sentences:
            if start <= pos < end:
                return start, end
        return 0, len(self.text)

    def is_question_at(self, pos: int) -> bool:
        start, end = self.sentence_at(pos)
        return self.text[start:end].rstrip().endswith("?")

    def clause_prefix(self, pos: int, limit: int = 40) -> str:
        """The lowercased text of the clause before `pos`, at most `limit` characters."""
        prefix = _COURTESY_RE.sub(" ", self.low[max(0, pos - limit) : pos])
        breaks = list(_CLAUSE_BREAK_RE.finditer(prefix))
        return prefix[breaks[-1].end() :] if breaks else prefix


@lru_cache(maxsize=16384)
def _stem(word: str) -> str:
    w = word.lower()
    if w.endswith("'s"):
        w = w[:-2]
    for suffix in ("ings", "ing", "edly", "ed", "ly", "es", "s"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            if suffix in ("s", "es") and w.endswith("ss"):
                break
            w = w[: -len(suffix)]
            if suffix in ("ing", "ings", "ed") and len(w) > 3 and w[-1] == w[-2] and w[-1] not in "lsz":
                w = w[:-1]
            break
    if w.endswith("e") and len(w) > 3:
        w = w[:-1]
    return w


def _parse_turns(conversation: Conversation) -> list[_Turn]:
    raw: list[tuple[str, str]] = []
    if conversation.utterances:
        raw = [(u.role, u.content or "") for u in conversation.utterances]
    elif conversation.transcript:
        for line in conversation.transcript.splitlines():
            m = _SPEAKER_RE.match(line)
            if m:
                raw.append(("agent" if m.group(1).lower() in _AGENT_LABELS else "user", line[m.end() :]))
            elif line.strip():
                if raw:
                    raw[-1] = (raw[-1][0], raw[-1][1] + " " + line)
                else:
                    raw.append(("user", line))
    turns = []
    for role, text in raw:
        text = " ".join(text.split())
        if text:
            turns.append(_Turn("agent" if role == "agent" else "user", text))
    return turns


def _narrow(outcome: AnalysisOutcome, config: AnalysisConfig) -> None:
    """Keep only the outputs a narrowed request asked for, as a model asked for only those would answer."""
    if not config.asks(SUMMARY):
        outcome.summary = None
    if not config.asks(SUCCESSFUL):
        outcome.successful = None
    if not config.asks(USER_SENTIMENT):
        outcome.user_sentiment = None
    if not config.asks(IN_VOICEMAIL):
        outcome.in_voicemail = None
    asked = {f.name for f in config.asked_fields()}
    outcome.custom_data = {name: value for name, value in outcome.custom_data.items() if name in asked}
    if not config.asks(SUCCESSFUL):
        outcome.evaluation = None


def _prompt_text(config: AnalysisConfig) -> str:
    """The prompts a request with this config sends: only those of the outputs it asks for."""
    fields = json.dumps([f.to_json() for f in config.asked_fields()], sort_keys=True, ensure_ascii=False)
    prompts = [
        prompt
        for output, prompt in (
            (SUMMARY, config.summary_prompt),
            (SUCCESSFUL, config.successful_prompt),
            (USER_SENTIMENT, config.user_sentiment_prompt),
        )
        if config.asks(output)
    ]
    return "\n".join((*prompts, fields))


def _transcript_text(conversation: Conversation, turns: list[_Turn]) -> str:
    if conversation.transcript:
        return conversation.transcript
    return "\n".join(f"{'Agent' if t.role == 'agent' else 'User'}: {t.text}" for t in turns)


# --- voicemail, outcome and success ----------------------------------------------------------

_VOICEMAIL_RE = re.compile(
    r"\b(?:leave (?:me |us )?(?:a|your) (?:message|voicemail)|leaving (?:you )?(?:a )?(?:message|voicemail)"
    r"|after the (?:tone|beep)|voice ?mail|mailbox|not available to take your call|can't come to the phone"
    r"|sorry i missed you|sorry we missed you)"
)


def _is_voicemail(turns: list[_Turn], disconnection_reason: str | None) -> bool:
    if (disconnection_reason or "").lower() in ("voicemail_reached", "voicemail"):
        return True
    if not any(_VOICEMAIL_RE.search(t.low) for t in turns):
        return False
    # A live person answered if any user line is not itself a voicemail greeting.
    return not any(t.role == "user" and not _VOICEMAIL_RE.search(t.low) for t in turns)


_POSITIVE_CUES = {
    "booking": re.compile(
        r"\b(?:booked|(?:re)?scheduled|put you down for|penciled you in|pencilled you in|locked in|reserved"
        r"|see you (?:on|at|then|next|tomorrow))"
    ),
    "confirmed": re.compile(r"\b(?:appointment is (?:set|confirmed)|(?:is|are|you'?re) confirmed|confirmed (?:for|your))"),
    "refund": re.compile(
        r"\b(?:refund\b[^.?!]{0,40}\b(?:processed|issued|approved|on its way)|issued (?:a |the |your |you a )?"
        r"(?:full |partial )?refund|refunded|credited)"
    ),
    "resolved": re.compile(
        r"\b(?:resolved|fixed|taken care of|sorted (?:out|it)|all set|has been updated|is updated|working now"
        r"|works now|active again|went through|(?:i'?ve|i have|we'?ve|we have) (?:changed|switched|upgraded"
        r"|downgraded|sent|emailed|reset|updated))"
    ),
    "callback": re.compile(r"\b(?:call(?:ing)? you back|callback|call back)"),
    "transfer": re.compile(r"\btransferr?(?:ing|ed) you"),
}
# Cues that name an outcome without making the conversation a success or a failure.
_NEUTRAL_CUES = {
    "cancelled": re.compile(r"\b(?:i'?ve|we'?ve|i have|we have|has been|have been|is now|was) cancell?ed\b"),
}
_NEGATIVE_CUES = {
    "unresolved": re.compile(
        r"\b(?:unresolved|not resolved|still (?:not|isn'?t|doesn'?t|broken|waiting|charged|wrong)"
        r"|(?:can'?t|cannot|unable to|not able to) (?:help|fix|resolve|process)"
        r"|(?:no one|nobody) (?:has )?(?:helped|called)|escalat)"
    ),
    "no_booking": re.compile(
        r"\b(?:no (?:openings|availability|slots|appointments)|fully booked|nothing (?:available|open)"
        r"|(?:couldn'?t|can'?t|could not|cannot|unable to) (?:book|find|schedule|fit))"
    ),
    "declined": re.compile(
        r"\b(?:not interested|not right now|not at this time|(?:i'?m|we'?re|i am|we are) renting|i rent\b"
        r"|(?:don'?t|do not) own)"
    ),
    "angry": re.compile(
        r"\b(?:ridiculous|unacceptable|waste of (?:my )?time|(?:speak|talk) (?:to|with) (?:a|your|the) "
        r"(?:manager|supervisor)|cancel my (?:account|subscription|service)|sick of|fed up|worst"
        r"|stop calling|take me off|remove me from|do not call|don'?t call me|hang(?:ing)? up|hung up)"
    ),
}
_NEGATION_RE = re.compile(
    r"\b(?:not|no|never|couldn'?t|can'?t|cannot|didn'?t|wasn'?t|isn'?t|won'?t|fully|unable)\b|n't\b"
)
# A cue right after these words is a wish or a question, not something that happened.
_INTENT_RE = re.compile(
    r"\b(?:want|wanted|like to|love to|need|needs|hoping|hope|trying|try to|can you|could you|would you"
    r"|will you|please|if|whether|to)\s*$|\b(?:like to|want to|need to)\b"
)


_ANY_CUE_RE = re.compile(
    "|".join(p.pattern for table in (_POSITIVE_CUES, _NEUTRAL_CUES, _NEGATIVE_CUES) for p in table.values())
)


def _outcome_events(turns: list[_Turn]) -> list[Event]:
    """Outcome cues in transcript order."""
    events: list[Event] = []
    for ti, turn in enumerate(turns):
        if not _ANY_CUE_RE.search(turn.low):
            continue
        for table in (_POSITIVE_CUES, _NEUTRAL_CUES):
            for category, pattern in table.items():
                for m in pattern.finditer(turn.low):
                    prefix = turn.clause_prefix(m.start())
                    if _NEGATION_RE.search(prefix) or _INTENT_RE.search(prefix) or turn.is_question_at(m.start()):
                        continue
                    events.append(((ti, m.start()), category))
        for category, pattern in _NEGATIVE_CUES.items():
            for m in pattern.finditer(turn.low):
                events.append(((ti, m.start()), category))
    events.sort()
    return events


_GOAL_RULES = (
    (
        re.compile(r"\b(?:book|appointment|schedul|reschedul|consultation|meeting|demo|site visit|reservation)"),
        ("booking", "confirmed"),
    ),
    (re.compile(r"\bconfirm"), ("confirmed", "booking")),
    (re.compile(r"\brefund"), ("refund",)),
    (re.compile(r"\b(?:resolv|fix|solv|sort)"), ("resolved", "refund")),
    (re.compile(r"\bcall ?back"), ("callback",)),
    (re.compile(r"\btransfer"), ("transfer",)),
)


@lru_cache(maxsize=512)
def _goals(text: str) -> frozenset[str]:
    """Outcomes a successful prompt (or a field description) asks for; empty means none in particular."""
    low = text.lower()
    goals: set[str] = set()
    for pattern, categories in _GOAL_RULES:
        if pattern.search(low):
            goals.update(categories)
    return frozenset(goals)


def _goal_met(events: list[Event], goals: frozenset[str]) -> bool:
    """A wanted outcome happened and nothing went wrong after it."""
    last_pos = max((pos for pos, c in events if c in goals), default=None)
    last_neg = max((pos for pos, c in events if c in _NEGATIVE_CUES), default=None)
    return last_pos is not None and (last_neg is None or last_neg < last_pos)


def _successful(events: list[Event], goals: frozenset[str], sentiment: Sentiment) -> bool:
    if goals:
        return _goal_met(events, goals)
    if any(c in _POSITIVE_CUES for _, c in events):
        return _goal_met(events, frozenset(_POSITIVE_CUES))
    # No outcome asked for and none stated: fine unless something went wrong.
    return not any(c in _NEGATIVE_CUES for _, c in events) and sentiment != "NEGATIVE"


# --- sentiment -------------------------------------------------------------------------------

_PHRASE_SCORES = (
    (re.compile(r"\bthanks for nothing\b"), -3),
    (re.compile(r"\bwaste of (?:my )?time\b"), -2),
    (re.compile(r"\b(?:fed up|sick of|sick and tired)\b"), -2),
    (re.compile(r"\b(?:stop calling|take me off|remove me from|do not call|don'?t call me)\b"), -2),
    (re.compile(r"\b(?:speak|talk) (?:to|with) (?:a|your|the) (?:manager|supervisor)\b"), -2),
    (re.compile(r"\bnot (?:happy|helpful|good|okay|ok|great|satisfied)\b"), -2),
    (re.compile(r"\b(?:thank you|thanks) (?:so|very) much\b"), 2),
    (re.compile(r"\b(?:sounds|that'?s) (?:good|great|perfect)\b"), 1),
    (re.compile(r"\b(?:works for me|that works)\b"), 1),
    # Neutral on purpose: a polite decline and greetings.
    (re.compile(r"\bno,? thank(?:s| you)\b"), 0),
    (re.compile(r"\bgood (?:morning|afternoon|evening|night|to know)\b"), 0),
    (re.compile(r"\b(?:no problem|no worries)\b"), 0),
)
_WORD_SCORES = {
    **dict.fromkeys(
        "great thanks thank perfect awesome wonderful excellent amazing fantastic love happy glad helpful "
        "appreciate appreciated nice good lovely brilliant excited relieved relief pleased".split(),
        1,
    ),
    **dict.fromkeys("annoyed annoying upset disappointed disappointing bad wrong confused complaint".split(), -1),
    **dict.fromkeys(
        "angry furious ridiculous unacceptable terrible awful horrible worst hate scam useless pathetic "
        "frustrated frustrating rude incompetent stupid mad outrageous disgusting lousy sucks unbelievable "
        "harassment".split(),
        -2,
    ),
}
_WORD_NEGATORS = frozenset("not never no isn't wasn't don't didn't doesn't hardly".split())


def _sentiment(user_turns: list[_Turn]) -> Sentiment:
    """A lexicon score over what the user said; the agent's words never count."""
    if not user_turns:
        return "UNKNOWN"
    score = 0
    for turn in user_turns:
        text = turn.low
        for pattern, value in _PHRASE_SCORES:
            text, n = pattern.subn(" ", text)
            score += value * n
        words = _TOKEN_RE.findall(text)
        for i, w in enumerate(words):
            value = _WORD_SCORES.get(w)
            if value is None:
                continue
            if any(p in _WORD_NEGATORS for p in words[max(0, i - 3) : i]):
                value = -value if value > 0 else 0
            score += value
    if score >= 1:
        return "POSITIVE"
    if score <= -1:
        return "NEGATIVE"
    return "NEUTRAL"


# --- summary ---------------------------------------------------------------------------------

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
_SCALE_WORDS = {"hundred": 100, "thousand": 1000}
_LIMIT_NUM = r"(\d+|a single|single|" + "|".join(_NUMBER_WORDS) + r")"
_RANGE_LIMIT_RE = re.compile(rf"\b{_LIMIT_NUM}\s*(?:-|\u2013|\u2014|to|or)\s*{_LIMIT_NUM}[\s-]*(word|sentence)s?\b")
_LIMIT_RE = re.compile(
    rf"\b(?:(no more than|not more than|less than|fewer than|under|below|at least|more than|minimum of)\s+)?{_LIMIT_NUM}[\s-]*(word|sentence)s?\b"
)
_ONE_LINER_RE = re.compile(r"\bone[\s-]?liner\b")


def _limit_value(raw: str) -> int:
    if raw.isdigit():
        return int(raw)
    if raw in ("single", "a single"):
        return 1
    return _NUMBER_WORDS[raw]


@lru_cache(maxsize=512)
def summary_limits(prompt: str) -> tuple[int | None, int | None]:
    """(max words, max sentences) that a summary prompt asks for, e.g. 'Write a 1–5 word summary' -> (5, None)."""
    low = prompt.lower().replace("\u2011", "-")
    limits: dict[str, int] = {}

    def keep(unit: str, value: int) -> None:
        if value > 0:
            limits[unit] = min(limits.get(unit, value), value)

    covered: list[tuple[int, int]] = []
    for m in _RANGE_LIMIT_RE.finditer(low):
        keep(m.group(3), max(_limit_value(m.group(1)), _limit_value(m.group(2))))
        covered.append(m.span())
    for m in _LIMIT_RE.finditer(low):
        if any(s <= m.start() < e for s, e in covered):
            continue
        qualifier = m.group(1)
        if qualifier in ("at least", "more than", "minimum of"):
            continue
        value = _limit_value(m.group(2))
        if qualifier in ("less than", "fewer than", "under", "below") and value > 1:
            value -= 1
        keep(m.group(3), value)
    if _ONE_LINER_RE.search(low):
        keep("sentence", 1)
    return limits.get("word"), limits.get("sentence")


_LABELS = {
    # category: (one-word label, short label, outcome sentence)
    "not_connected": ("Unanswered", "Not connected", "The call did not connect, so there was no conversation."),
    "voicemail": ("Voicemail", "Voicemail left", "The call reached voicemail."),
    "error": ("Error", "Ended in error", "The conversation ended with an error."),
    "ongoing": ("Ongoing", "In progress", "The conversation is still in progress."),
    "booking": ("Booked", "Appointment booked", "An appointment was booked."),
    "confirmed": ("Confirmed", "Appointment confirmed", "The appointment was confirmed."),
    "refund": ("Refunded", "Refund processed", "A refund was processed."),
    "resolved": ("Resolved", "Issue resolved", "The issue was resolved."),
    "callback": ("Callback", "Callback arranged", "A callback was arranged."),
    "transfer": ("Transferred", "Transferred", "The user was transferred."),
    "cancelled": ("Cancelled", "Appointment cancelled", "The appointment was cancelled."),
    "declined": ("Declined", "Not interested", "The user declined."),
    "angry": ("Upset", "Upset, unresolved", "The user was upset and the issue was not resolved."),
    "unresolved": ("Unresolved", "Issue unresolved", "The issue was not resolved."),
    "no_booking": ("Unbooked", "No booking", "No appointment was booked."),
}
_GOOD_LABELS = frozenset(_POSITIVE_CUES) | frozenset(_NEUTRAL_CUES)
_MAX_QUOTE_WORDS = 30
_MAX_TOPIC_WORDS = 6


def _word_count(text: str) -> int:
    return len(text.split())


def _clean_quote(sentence: str) -> str:
    """A quotable line: no leading greeting, no inner sentence breaks, no trailing punctuation."""
    words = sentence.strip().split()
    while len(words) > 1 and words[0].lower().strip(",.!") in _GREETING_TOKENS:
        words.pop(0)
    if len(words) > _MAX_QUOTE_WORDS:
        words = [*words[:_MAX_QUOTE_WORDS], "\u2026"]
    text = " ".join(words).replace('"', "'")
    text = re.sub(r"[.!?]+\s+", ", ", text).strip().rstrip(".!?,;: ")
    return text[:1].upper() + text[1:] if text else ""


def _content_words(turn: _Turn, start: int = 0, end: int | None = None) -> list[_Token]:
    end = len(turn.low) if end is None else end
    return [t for t in turn.tokens if start <= t.start < end and t.word not in _SUMMARY_FILLER and len(t.word) > 1]


_REQUEST_STEMS = frozenset(
    _stem(w)
    for w in (
        "book appointment schedule reschedule cancel refund charge charged bill billing invoice plan upgrade "
        "downgrade payment card price cost quote problem issue emergency pain hurts insurance install "
        "solar panels roof order account password broken"
    ).split()
)
_PURPOSE_RE = re.compile(r"\b(?:calling (?:about|to|regarding|because)|this message is|remind)")


def _key_user_line(turns: list[_Turn], events: list[Event]) -> str:
    """The user's request: early, substantive lines that name what they wanted or how it ended."""
    cue_spots = {ti: pos for (ti, pos), c in events if turns[ti].role == "user" and c in _NEGATIVE_CUES}
    best = (0.0, "")
    substantive_seen = False
    n = 0
    for ti, turn in enumerate(turns):
        if turn.role != "user":
            continue
        first = False
        for start, end in turn.sentences:
            content = _content_words(turn, start, end)
            if not content:
                continue
            score = len(content) - 0.3 * n
            if any(t.stem in _REQUEST_STEMS for t in content):
                score += 3
            if not substantive_seen and len(content) >= 2:
                first = True
                score += 3
            if start <= cue_spots.get(ti, -1) < end:
                # The line where things went wrong says more than the request; quote all of it.
                score = len(_content_words(turn)) + 6
                start, end = 0, len(turn.text)
            if score > best[0]:
                best = (score, turn.text[start:end])
        substantive_seen = substantive_seen or first
        n += 1
    if best[1]:
        return _clean_quote(best[1])
    longest = max((t for t in turns if t.role == "user"), key=lambda t: len(t.text), default=None)
    return _clean_quote(longest.text) if longest is not None else ""


def _polarity(category: str | None) -> int:
    return -1 if category in _NEGATIVE_CUES else 1


def _key_agent_line(turns: list[_Turn], events: list[Event], label: str | None) -> str:
    """The agent's line that states the outcome, or its most substantive statement after the greeting."""
    agent_turns = [t for t in turns if t.role == "agent"]
    if not agent_turns:
        return ""
    if label == "voicemail":
        for turn in agent_turns:
            for start, end in turn.sentences:
                if _PURPOSE_RE.search(turn.low, start, end):
                    return _clean_quote(turn.text[start:end])
    # Of the agent's outcome lines that agree with the final outcome, the most informative (then the latest).
    best = (-1, -1, "")
    for (ti, pos), category in events:
        if turns[ti].role == "agent" and _polarity(category) == _polarity(label):
            start, end = turns[ti].sentence_at(pos)
            rank = (len(_content_words(turns[ti], start, end)), ti)
            if rank >= best[:2]:
                best = (*rank, turns[ti].text[start:end])
    if best[2]:
        return _clean_quote(best[2])
    fallback = (0.0, "")
    for turn in agent_turns[1:] or agent_turns:
        for start, end in turn.sentences:
            if turn.text[start:end].rstrip().endswith("?"):
                continue
            content = _content_words(turn, start, end)
            score = len(content) + (3 if any(t.stem in _REQUEST_STEMS for t in content) else 0)
            if score > fallback[0]:
                fallback = (score, turn.text[start:end])
    return _clean_quote(fallback[1])


def _summary(turns: list[_Turn], kind: str, label: str | None, events: list[Event], prompt: str) -> str:
    word_limit, sentence_limit = summary_limits(prompt)
    user_key = _key_user_line(turns, events)
    agent_key = _key_agent_line(turns, events, label)

    sentences: list[str] = []
    if not turns:
        sentences.append(_LABELS["not_connected"][2] if kind == "CALL" else "The chat has no messages.")
    elif label == "voicemail":
        if agent_key:
            sentences.append(f'The call reached voicemail and the agent left a message: "{agent_key}".')
        else:
            sentences.append(_LABELS["voicemail"][2])
    else:
        if user_key and agent_key:
            sentences.append(f'The user said "{user_key}" and the agent replied "{agent_key}".')
        elif user_key:
            sentences.append(f'The user said "{user_key}".')
        elif agent_key:
            sentences.append(f'The agent said "{agent_key}" and the user did not reply.')
        if label is not None:
            sentences.append(_LABELS[label][2])
        last_user = next((t for t in reversed(turns) if t.role == "user"), None)
        if last_user is not None and _content_words(last_user):
            closing = _clean_quote(last_user.text)
            if closing and closing.lower() not in user_key.lower():
                sentences.append(f'The user ended with "{closing}".')

    if sentence_limit is not None:
        sentences = sentences[:sentence_limit]
    text = " ".join(sentences)
    if word_limit is None or _word_count(text) <= word_limit:
        return text
    kept: list[str] = []
    for sentence in sentences:
        if _word_count(" ".join([*kept, sentence])) > word_limit:
            break
        kept.append(sentence)
    if kept:
        return " ".join(kept)
    return _compressed_summary(label, user_key, agent_key, word_limit)


def _compressed_summary(label: str | None, user_key: str, agent_key: str, limit: int) -> str:
    """An outcome label and the topic words of the key lines, for limits too tight for a sentence."""
    head = ""
    if label is not None:
        one_word, short, _ = _LABELS[label]
        head = one_word if limit <= 3 else short
    seen = {_stem(w.lower().strip(",:")) for w in head.split()}
    topic: list[str] = []
    lines = (agent_key, user_key) if label in _GOOD_LABELS else (user_key, agent_key)
    for line in lines:
        for m in _TOKEN_RE.finditer(line.lower()):
            word = m.group()
            if word in _SUMMARY_FILLER or word[0].isdigit() or len(word) < 2 or _stem(word) in seen:
                continue
            seen.add(_stem(word))
            topic.append(line[m.start() : m.end()])
    head_words = head.split()[:limit]
    words = head_words + topic[: min(_MAX_TOPIC_WORDS, max(0, limit - len(head_words)))]
    if not words:
        return " ".join("No conversation".split()[:limit])
    if head_words and len(words) > len(head_words):
        words[len(head_words) - 1] += ":"
    text = " ".join(words)
    return text[:1].upper() + text[1:]


# --- custom fields ---------------------------------------------------------------------------

_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_YES = frozenset("yes yeah yep yup sure correct absolutely definitely certainly indeed affirmative".split())
_NO = frozenset("no nope nah not never negative".split())
_STATEMENT_NEGATIONS = frozenset(
    "not no never don't didn't doesn't isn't wasn't aren't weren't haven't hasn't hadn't can't cannot "
    "couldn't won't wouldn't shouldn't nobody nothing unable fully".split()
)
_INTENT_WORDS = frozenset(
    "want wanted wanna like love need hoping hope trying try would can will let if whether maybe might to".split()
)
_LEAD_FILLER = frozenset(
    """i i've i'm we we've we're have has it's its it is my our the a an about around just probably maybe
    usually like um uh well so oh hmm it's that's""".split()
)
# Words too common to signal a field on their own, even in its name.
_WEAK_WORDS = frozenset("new old first last next good time day date made make done open closed total main".split())
_GENERIC_CHOICES = frozenset({"other", "unknown", "none", "n/a", "na", "not_sure", "unsure"})
_MONEY_STEMS = frozenset(
    _stem(w) for w in "bill cost price amount usd dollar payment charge refund fee spend budget pay".split()
)
_WEEKDAY_RE = re.compile(r"\b(?:(?:next|this)\s+)?(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b", re.I)
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


@lru_cache(maxsize=2048)
def _field_keywords(name: str, description: str) -> dict[str, int]:
    """Stems that signal a field: words of its name weigh 2, other words of its description 1."""
    keywords: dict[str, int] = {}
    for word in _TOKEN_RE.findall(_CAMEL_RE.sub(" ", name).replace("_", " ").replace("-", " ").lower()):
        if word not in _STOPWORDS and len(word) > 1:
            keywords[_stem(word)] = 1 if word in _WEAK_WORDS else 2
    for word in _TOKEN_RE.findall(description.lower()):
        if word not in _STOPWORDS and len(word) > 1:
            keywords.setdefault(_stem(word), 1)
    return keywords


def _extract_field(f: DataField, turns: list[_Turn], events: list[Event]) -> Any:
    if not turns:
        return None
    if f.type == "ENUM":
        return _extract_enum(turns, f.choices or ())
    keywords = _field_keywords(f.name, f.description)
    if f.type == "BOOLEAN":
        value = _extract_boolean(turns, keywords)
        goals = _goals(f"{f.name.replace('_', ' ')} {f.description}")
        if value is None and goals:
            # A field about an outcome ("appointment booked", "resolved") follows the outcome cues.
            return _goal_met(events, goals)
        return value
    if f.type == "NUMBER":
        return _extract_number(turns, keywords)
    return _extract_string(turns, keywords, f.examples)


def _sentence_hits(turn: _Turn, keywords: dict[str, int]) -> list[tuple[tuple[int, int], list[int], int]]:
    """Per sentence: its span, the indexes of tokens that are field keywords, and their distinct weight."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, token in enumerate(turn.tokens):
        if token.stem in keywords:
            groups.setdefault(turn.sentence_at(token.start), []).append(i)
    return [
        (span, idx, sum(keywords[s] for s in {turn.tokens[i].stem for i in idx})) for span, idx in groups.items()
    ]


def _answer(turns: list[_Turn], ti: int) -> _Turn | None:
    if ti + 1 < len(turns) and turns[ti + 1].role != turns[ti].role:
        return turns[ti + 1]
    return None


def _yes_no(turn: _Turn) -> bool | None:
    """Whether a reply opens with yes or no (first clause only)."""
    text = _COURTESY_RE.sub(" ", turn.low)
    for m in _TOKEN_RE.finditer(text):
        if m.start() > 40:
            break
        word = m.group()
        if word in _YES:
            return True
        if word in _NO:
            return False
        if text[m.end() : m.end() + 1] in (",", ".", "!", "?", ";"):
            break
    return None


def _declines(turn: _Turn) -> bool:
    """A reply that opens with no or a negation ("No.", "I don't have one")."""
    lead = [t.word for t in turn.tokens[:3]]
    return _yes_no(turn) is False or any(w in _STATEMENT_NEGATIONS or w.endswith("n't") for w in lead)


def _extract_boolean(turns: list[_Turn], keywords: dict[str, int]) -> bool | None:
    """The last plain yes/no about the field: an answered question or a (negated) statement."""
    value: bool | None = None
    for ti, turn in enumerate(turns):
        for (start, _), idx, score in _sentence_hits(turn, keywords):
            if score < 2:
                continue
            token = turn.tokens[idx[0]]
            if turn.is_question_at(token.start):
                answer = _answer(turns, ti)
                decided = _yes_no(answer) if answer is not None else None
            elif turn.role == "agent":
                # The agent's statements describe the business, not this user; outcomes come from the cues.
                decided = None
            else:
                before = _TOKEN_RE.findall(turn.clause_prefix(token.start, 60))[-5:]
                if any(w in _STATEMENT_NEGATIONS or w.endswith("n't") for w in before):
                    decided = False
                elif any(w in _INTENT_WORDS for w in before[-3:]):
                    decided = None
                else:
                    decided = True
            if decided is not None:
                value = decided
    return value


def _numbers(turn: _Turn) -> list[tuple[int, float | int, bool]]:
    """(token index, value, is money) of each plainly stated number; times, dates and phones excluded."""
    if turn._numbers is None:
        turn._numbers = _find_numbers(turn)
    return turn._numbers


def _find_numbers(turn: _Turn) -> list[tuple[int, float | int, bool]]:
    phone_spans = [m.span() for m in _PHONE_RE.finditer(turn.low) if sum(c.isdigit() for c in m.group()) >= 7]
    tokens = turn.tokens
    found: list[tuple[int, float | int, bool]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        word = token.word
        nxt = tokens[i + 1].word if i + 1 < len(tokens) else ""
        if word[0] == "$" or word[0].isdigit():
            i += 1
            if any(s <= token.start < e for s, e in phone_spans):
                continue
            if turn.low[token.end : token.end + 1] == ":" or nxt in ("am", "pm", "a.m", "p.m", "o'clock"):
                continue
            m = re.fullmatch(r"\$?([\d,]+(?:\.\d+)?)(%|[a-z]+)?", word)
            if m is None or (m.group(2) or "") not in ("", "%", "k"):
                continue
            value = float(m.group(1).replace(",", ""))
            if m.group(2) == "k":
                value *= 1000
            money = word[0] == "$" or nxt in ("dollars", "dollar", "bucks", "usd")
            found.append((i - 1, int(value) if value.is_integer() else value, money))
            continue
        if word in _NUMBER_WORDS or (word == "a" and nxt in _SCALE_WORDS):
            start = i
            total, current = 0, 0
            while i < len(tokens):
                w = tokens[i].word
                if w in _NUMBER_WORDS:
                    current += _NUMBER_WORDS[w]
                elif w in _SCALE_WORDS:
                    if _SCALE_WORDS[w] == 1000:
                        total += max(current, 1) * 1000
                        current = 0
                    else:
                        current = max(current, 1) * 100
                elif not (w == "a" and i == start) and not (
                    w == "and" and i > start and i + 1 < len(tokens) and tokens[i + 1].word in _NUMBER_WORDS
                ):
                    break
                i += 1
            prev = tokens[start - 1].word if start > 0 else ""
            following = tokens[i].word if i < len(tokens) else ""
            if word == "one" and i == start + 1 and (
                prev in ("this", "that", "the", "which", "no", "every", "any", "some", "each", "another")
                or following in ("of", "more")
            ):
                continue
            if following in ("am", "pm", "a.m", "p.m", "o'clock"):
                continue
            found.append((start, total + current, following in ("dollars", "dollar", "bucks")))
            continue
        i += 1
    return found


def _asked_about(turn: _Turn, keywords: dict[str, int]) -> bool:
    return any(
        turn.is_question_at(turn.tokens[idx[0]].start) for _, idx, score in _sentence_hits(turn, keywords) if score
    )


_UNIT_STEMS = frozenset(
    _stem(w) for w in "second minute hour day week month year time business percent mile".split()
)


def _unit_after(turn: _Turn, index: int) -> str | None:
    """The stem of a unit word right after the number at `index` (skipping further number words)."""
    for token in turn.tokens[index + 1 : index + 4]:
        if token.word in _NUMBER_WORDS or token.word in _SCALE_WORDS or token.word in ("and", "to", "or"):
            continue
        if token.word[0].isdigit():
            continue
        return token.stem if token.stem in _UNIT_STEMS else None
    return None


def _extract_number(turns: list[_Turn], keywords: dict[str, int]) -> float | int | None:
    """The number stated closest to the field's words, or given as the answer to a question about it."""
    money_field = any(s in _MONEY_STEMS for s in keywords)
    best: tuple[float, int, float | int] | None = None
    for ti, turn in enumerate(turns):
        numbers = _numbers(turn)
        if not numbers:
            continue
        hits = [i for i, t in enumerate(turn.tokens) if t.stem in keywords]
        asked = ti > 0 and turns[ti - 1].role != turn.role and _asked_about(turns[ti - 1], keywords)
        for index, value, money in numbers:
            unit = _unit_after(turn, index)
            if unit and unit not in keywords:
                continue  # "three weeks" is a duration, not a party size
            distance: float | None = min((abs(index - h) for h in hits), default=None)
            if distance is not None and distance > 6:
                distance = None
            if distance is None and asked:
                distance = 6 + min(index, 6)
            if distance is None:
                continue
            if money_field and money:
                distance -= 2
            # Closest to the field's words wins; on a tie the later statement (a correction) wins.
            if best is None or (distance, -ti) < best[:2]:
                best = (distance, -ti, value)
    return best[2] if best is not None else None


@lru_cache(maxsize=1024)
def _choice_stems(choice: str) -> tuple[str, ...]:
    words = [w for w in re.split(r"[\s_/-]+", choice.lower()) if w]
    return tuple(_stem(w) for w in words if w not in _STOPWORDS) or tuple(_stem(w) for w in words)


def _extract_enum(turns: list[_Turn], choices: tuple[str, ...]) -> str | None:
    """The one choice the conversation names (the user's words count double); lines listing several are menus."""
    wanted = [(c, _choice_stems(c)) for c in choices if c.lower() not in _GENERIC_CHOICES]
    scores: dict[str, int] = {}
    first_seen: dict[str, tuple[int, int]] = {}
    for ti, turn in enumerate(turns):
        stems = [t.stem.replace("-", "") for t in turn.tokens]
        present = set(stems)
        mentioned: dict[str, int] = {}
        for choice, parts in wanted:
            head = parts[0].replace("-", "")
            if head not in present:
                continue
            for i, stem in enumerate(stems):
                if stem != head:
                    continue
                window = stems[max(0, i - 4) : i + 5]
                if all(p.replace("-", "") in window for p in parts[1:]):
                    if not _NEGATION_RE.search(turn.clause_prefix(turn.tokens[i].start, 20)):
                        mentioned.setdefault(choice, i)
                        break
        if len(mentioned) != 1:
            continue
        for choice, index in mentioned.items():
            scores[choice] = scores.get(choice, 0) + (2 if turn.role == "user" else 1)
            first_seen.setdefault(choice, (ti, index))
    if not scores:
        return None
    return min(scores, key=lambda c: (-scores[c], first_seen[c]))


_PHRASE_STOPS = frozenset("and but so because though although which who".split())
_LINK_RE = re.compile(r"\s*(?:is|was|are|were|:|=|of|would be|will be)\s+")


def _phrase(turn: _Turn, tokens: list[_Token], max_words: int = 6) -> str:
    """Up to `max_words` tokens from the start of `tokens`, stopping at the end of the clause."""
    words: list[_Token] = []
    for token in tokens:
        if words and (
            token.start >= turn.sentence_at(words[0].start)[1]
            or any(c in turn.low[words[-1].end : token.start] for c in ",;!?")
        ):
            break
        if not words and token.word in _LEAD_FILLER:
            continue
        if words and token.word in _PHRASE_STOPS:
            break
        words.append(token)
        if len(words) >= max_words:
            break
    return turn.text[words[0].start : words[-1].end] if words else ""


def _extract_string(turns: list[_Turn], keywords: dict[str, int], examples: tuple[str, ...]) -> str | None:
    """An example value named in the conversation, else the user's answer to a question about the field,
    else what the user says right after the field's words ("my email is ...")."""
    for example in examples:
        if example.strip():
            pattern = re.compile(rf"\b{re.escape(example.lower())}\b")
            if any(pattern.search(turn.low) for turn in turns):
                return example
    # Examples of a recognizable kind (weekdays, emails) stand for any value of that kind, and only that kind.
    for kind_re in (_WEEKDAY_RE, _EMAIL_RE):
        if examples and all(kind_re.search(e) for e in examples if e.strip()):
            for role in ("user", "agent"):
                for turn in reversed(turns):
                    if turn.role == role:
                        m = kind_re.search(turn.text)
                        if m:
                            return m.group()
            return None
    best: tuple[tuple[int, int], str] | None = None
    for ti, turn in enumerate(turns):
        for _, idx, score in _sentence_hits(turn, keywords):
            if score < 2:
                continue
            last = turn.tokens[idx[-1]]
            phrase = ""
            if turn.role == "agent" and turn.is_question_at(last.start):
                answer = _answer(turns, ti)
                if answer is not None and not _declines(answer):
                    phrase, rank = _phrase(answer, answer.tokens), (1, ti)
            elif turn.role == "user" and not turn.is_question_at(last.start):
                link = _LINK_RE.match(turn.low, last.end)
                if link is not None and not _NEGATION_RE.search(turn.clause_prefix(last.start)):
                    rest = [t for t in turn.tokens if t.start >= link.end()]
                    phrase, rank = _phrase(turn, rest), (0, ti)
            if phrase and (best is None or rank > best[0]):
                best = (rank, phrase)
    return best[1] if best is not None else None
