"""Deterministic demo data in Retell's export shape: versioned agents, calls and chats.

Everything derives from one seeded `random.Random`, so a seed always yields the same records.
No analysis is included: the server analyses each conversation when it arrives.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# 2026-11-20T12:00:00Z: a fixed "now" keeps the output identical from run to run.
DEFAULT_NOW_MS = 1_795_176_000_000
DAY_MS = 86_400_000
SPAN_MS = 30 * DAY_MS

_SENTIMENT_DEFAULT = (
    "Evaluate the user's sentiment, mood and satisfaction level during the conversation: "
    "NEGATIVE, NEUTRAL or POSITIVE, or UNKNOWN when the transcript does not tell."
)


# --- agents and their versions ---------------------------------------------------------------


@dataclass(frozen=True)
class _Version:
    title: str
    model: str
    summary: str
    successful: str
    fields: tuple[dict[str, Any], ...]
    sentiment: str = _SENTIMENT_DEFAULT


@dataclass(frozen=True)
class _AgentSpec:
    key: str
    name: str
    channel: str  # "voice" or "chat"
    # Days before now when versions 0, 1 and 2 were published and the draft (3) last edited.
    published_days_ago: tuple[float, float, float, float]
    versions: tuple[_Version, _Version, _Version, _Version]


def _field(type_: str, name: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"type": type_, "name": name, "description": description, **extra}


_APPT = _field("boolean", "appointment_booked", "Did the caller book or reschedule an appointment?")
_VISIT = _field(
    "enum", "visit_type", "Kind of visit requested", choices=["cleaning", "checkup", "emergency", "whitening", "other"]
)
_VISIT_REQ = {**_VISIT, "required": True}
_PARTY = _field("number", "party_size", "How many people the booking is for")
_DAY = _field("string", "preferred_day", "Day the caller prefers", examples=["Tuesday", "next Friday"])
_INSURANCE = _field(
    "string", "insurance_provider", "Dental insurance the caller has", examples=["Delta Dental", "Aetna"]
)
_NEW_PATIENT = _field("boolean", "new_patient", "Is the caller a new patient?")

_INTERESTED = _field("boolean", "interested", "Is the homeowner interested in going solar?")
_BILL = _field("number", "monthly_bill_usd", "Average monthly electricity bill in US dollars")
_BILL_REQ = {**_BILL, "required": True}
_ROOF = _field("enum", "roof_type", "Roof material", choices=["asphalt", "tile", "metal", "flat"])
_OBJECTION = _field(
    "string", "objection", "Main objection the person raised", examples=["too expensive", "renting", "bad timing"]
)
_HOMEOWNER = _field("boolean", "homeowner", "Does the person own the home?", required=True)
_CONSULTATION = _field("boolean", "consultation_booked", "Was a free consultation booked?")

_ISSUE = _field("enum", "issue", "Billing issue type", choices=["refund", "invoice", "plan_change", "other"])
_ISSUE2 = {**_ISSUE, "choices": ["refund", "invoice", "plan_change", "payment_failed", "other"]}
_ISSUE2_REQ = {**_ISSUE2, "required": True}
_REFUND = _field("number", "refund_amount_usd", "Amount refunded in US dollars")
_RESOLVED = _field("boolean", "resolved", "Was the customer's issue resolved in the chat?")
_EMAIL = _field(
    "string", "account_email", "Email address on the customer's account", examples=["jane.doe@example.com"]
)

_AGENTS = (
    _AgentSpec(
        key="dental",
        name="Riverside Dental Receptionist",
        channel="voice",
        published_days_ago=(41.3, 23.6, 10.2, 1.7),
        versions=(
            _Version(
                "Launch",
                "gemini-2.0-flash",
                "Summarize the call in two sentences.",
                "Successful if the caller's question was answered.",
                (_APPT, _VISIT),
            ),
            _Version(
                "Booking focus",
                "gemini-2.5-flash",
                "Summarize the call in two sentences, naming the service asked for.",
                "Successful if an appointment was booked or rescheduled.",
                (_APPT, _VISIT, _PARTY, _DAY),
            ),
            _Version(
                "Spring hours",
                "gemini-2.5-flash",
                "Summarize the call in two sentences, naming the service asked for.",
                "Successful if an appointment was booked or rescheduled.",
                (_APPT, _VISIT_REQ, _PARTY, _DAY, _INSURANCE),
            ),
            _Version(
                "Short summaries",
                "gemini-2.5-flash-lite",
                "Write a 1\u20135 word summary of the call.",
                "Successful only if an appointment was booked and the caller confirmed the time.",
                (_APPT, _VISIT_REQ, _PARTY, _DAY, _INSURANCE, _NEW_PATIENT),
            ),
        ),
    ),
    _AgentSpec(
        key="solar",
        name="SunPeak Solar Outbound",
        channel="voice",
        published_days_ago=(36.8, 19.4, 7.9, 0.9),
        versions=(
            _Version(
                "Pilot",
                "gemini-2.5-flash-lite",
                "Write a 1 to 3 sentence summary of the conversation based on the transcript.",
                "Successful if the homeowner agreed to a free consultation.",
                (_INTERESTED, _BILL),
            ),
            _Version(
                "Qualifying questions",
                "gemini-2.5-flash",
                "Write a 1 to 3 sentence summary of the conversation based on the transcript.",
                "Successful if the homeowner agreed to a free consultation.",
                (_INTERESTED, _BILL, _ROOF, _OBJECTION),
            ),
            _Version(
                "Homeowners only",
                "gemini-2.5-flash",
                "Summarize in one sentence: interest level and next step.",
                "Successful if the homeowner agreed to a free consultation.",
                (_INTERESTED, _BILL, _ROOF, _OBJECTION, _HOMEOWNER),
                "Rate the homeowner's attitude toward the call: NEGATIVE, NEUTRAL or POSITIVE.",
            ),
            _Version(
                "Pro review",
                "gemini-2.5-pro",
                "In 10 words or less, say whether the homeowner is interested and why.",
                "Successful only if a consultation was booked with a date and time.",
                (_INTERESTED, _BILL_REQ, _ROOF, _OBJECTION, _HOMEOWNER, _CONSULTATION),
                "Rate the homeowner's attitude toward the call: NEGATIVE, NEUTRAL or POSITIVE.",
            ),
        ),
    ),
    _AgentSpec(
        key="billing",
        name="Acme Billing Chat",
        channel="chat",
        published_days_ago=(44.1, 21.2, 12.5, 2.4),
        versions=(
            _Version(
                "Launch",
                "gemini-2.0-flash",
                "One sentence on what the customer needed.",
                "Evaluate whether the agent had a successful conversation with the user: the agent finished "
                "the task it was given and the conversation did not end in an error or an unresolved problem.",
                (_ISSUE,),
            ),
            _Version(
                "Refund tracking",
                "gemini-2.5-flash-lite",
                "One sentence on what the customer needed.",
                "Evaluate whether the agent had a successful conversation with the user: the agent finished "
                "the task it was given and the conversation did not end in an error or an unresolved problem.",
                (_ISSUE, _REFUND, _RESOLVED),
            ),
            _Version(
                "Payment failures",
                "gemini-2.5-flash-lite",
                "One sentence on what the customer needed.",
                "Successful if the customer's billing issue was resolved in the chat.",
                (_ISSUE2, _REFUND, _RESOLVED),
            ),
            _Version(
                "Terse",
                "gemini-2.5-flash",
                "Write a 1-5 word summary of the chat.",
                "Successful if the customer's billing issue was resolved in the chat.",
                (_ISSUE2_REQ, _REFUND, _RESOLVED, _EMAIL),
            ),
        ),
    ),
)
_DRAFT = 3


def _agent_record(agent_id: str, spec: _AgentSpec, number: int, modified_ms: int) -> dict[str, Any]:
    v = spec.versions[number]
    prefix = "call" if spec.channel == "voice" else "chat"
    items: list[dict[str, Any]] = [
        {"type": "system-presets", "name": f"{prefix}_summary", "description": v.summary},
        {"type": "system-presets", "name": f"{prefix}_successful", "description": v.successful},
        {"type": "system-presets", "name": "user_sentiment", "description": v.sentiment},
    ]
    for f in v.fields:
        items.append({k: (list(val) if isinstance(val, list) else val) for k, val in f.items()})
    return {
        "agent_id": agent_id,
        "agent_name": spec.name,
        "version": number,
        "is_published": number != _DRAFT,
        "version_title": v.title,
        "last_modification_timestamp": modified_ms,
        f"post_{prefix}_analysis_model": v.model,
        f"post_{prefix}_analysis_data": items,
    }


# --- vocabulary -------------------------------------------------------------------------------

_FIRST = (
    "Maria James Priya Daniel Aisha Tom Sofia Kevin Grace Luis Hannah Omar Emily Raj Chloe Marcus Nina "
    "Ethan Fatima Ben Olivia Diego Mei Sam Laura Victor Zoe Andre Ruth Kenji"
).split()
_LAST = (
    "Garcia Chen Patel Okafor Nguyen Smith Rossi Kim Johnson Alvarez Brooks Haddad Murphy Singh Novak "
    "Turner Mendes Park Fischer Ramirez Cohen Walsh Ito Dubois Larsen"
).split()
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_TIMES = ("8:30 AM", "9 AM", "9:45 AM", "10 AM", "11:15 AM", "noon", "1 PM", "2 PM", "2:30 PM", "3:15 PM", "4 PM")
_NUMBER_WORDS = ("two", "three", "four")
_RELATIONS = ("son", "daughter", "husband", "wife", "partner", "mom", "kids")
_INSURERS = ("Delta Dental", "Aetna", "Cigna", "MetLife", "Guardian", "Blue Shield")
_PERSONAS = ("Ava", "Jordan", "Riley", "Sam", "Casey")
_CITIES = ("San Jose", "Fremont", "Walnut Creek", "Santa Rosa", "Hayward", "Concord", "Palo Alto")
_ROOFS = (
    ("asphalt", "asphalt shingle"),
    ("tile", "clay tile"),
    ("metal", "a metal roof"),
    ("flat", "a flat roof, it's a low slope"),
)
_PLANS = ("Starter", "Basic", "Pro", "Team", "Business")
_MONTHS = ("August", "September", "October", "November")
_DOMAINS = ("example.com", "mail.example.org", "example.net")
_AREAS = ("415", "510", "650", "408", "925", "707")

_DENTAL_SERVICES = (
    ("cleaning", "a cleaning", "teeth cleaning"),
    ("checkup", "a checkup", "routine checkup"),
    ("whitening", "a whitening appointment", "whitening session"),
    ("cleaning", "a cleaning for my kids", "cleaning"),
    ("checkup", "a checkup and x-rays", "checkup"),
)


def _ch(r: random.Random, seq: Any) -> Any:
    """random.choice without its per-call overhead (the generator's speed matters at 100k calls)."""
    return seq[int(r.random() * len(seq))]


def _rr(r: random.Random, start: int, stop: int) -> int:
    return start + int(r.random() * (stop - start))


@dataclass
class _Ctx:
    """One conversation's random picks, shared by the lines of its template."""

    r: random.Random
    first: str
    last: str
    persona: str
    day: str
    time: str
    time2: str

    @property
    def email(self) -> str:
        return f"{self.first.lower()}.{self.last.lower()}@{_DOMAINS[len(self.first) % len(_DOMAINS)]}"


def _ctx(r: random.Random) -> _Ctx:
    i = int(r.random() * len(_TIMES))
    t1, t2 = _TIMES[i], _TIMES[(i + 1 + int(r.random() * (len(_TIMES) - 1))) % len(_TIMES)]
    return _Ctx(r, _ch(r, _FIRST), _ch(r, _LAST), _ch(r, _PERSONAS), _ch(r, _WEEKDAYS), t1, t2)


Lines = list[tuple[str, str]]


# --- dental receptionist (voice) --------------------------------------------------------------

_CLINIC = "Riverside Dental"
_CLINIC_PHONE = "+14155550142"
_CLINIC_SPOKEN = "(415) 555-0142"


def _dental_greeting(c: _Ctx) -> str:
    return _ch(c.r, 
        (
            f"{_CLINIC}, this is {c.persona}. How can I help you today?",
            f"Thanks for calling {_CLINIC}, you're speaking with {c.persona}. What can I do for you?",
            f"Good morning, {_CLINIC}. How may I help?",
        )
    )


def _dental_booking(c: _Ctx) -> Lines:
    r = c.r
    _, phrase, noun = _ch(r, _DENTAL_SERVICES)
    when = _ch(r, (c.day, f"next {c.day}", f"this {c.day}"))
    lines: Lines = [
        ("agent", _dental_greeting(c)),
        (
            "user",
            _ch(r, 
                (
                    f"Hi, I'd like to book {phrase} for {when}.",
                    f"Hello, I need to schedule {phrase}. Is {when} open?",
                    f"Hi there, can I get {phrase} sometime {when}?",
                    f"Yeah hi, I'm due for {phrase} and {when} would be ideal.",
                )
            ),
        ),
        ("agent", "Of course. Can I have your full name, please?"),
        ("user", f"It's {c.first} {c.last}."),
    ]
    if r.random() < 0.6:
        lines.append(("agent", f"Thanks, {c.first}. Is the appointment just for you, or for more people?"))
        n = _ch(r, _NUMBER_WORDS)
        lines.append(
            (
                "user",
                _ch(r, 
                    (
                        "Just for me.",
                        f"It's for {n} people, me and my {_ch(r, _RELATIONS)}.",
                        f"For {n} of us, if you can fit us in back to back.",
                    )
                ),
            )
        )
    if r.random() < 0.5:
        lines.append(("agent", "Are you a new patient with us?"))
        lines.append(
            ("user", _ch(r, ("Yes, it's my first visit.", "No, I've been coming for years.", "Yes, we just moved here.")))
        )
    if r.random() < 0.55:
        lines.append(("agent", "Which dental insurance do you have?"))
        lines.append(
            (
                "user",
                _ch(r, 
                    (
                        f"I have {_ch(r, _INSURERS)}.",
                        f"{_ch(r, _INSURERS)} through my employer.",
                        "I don't have insurance, I'll pay out of pocket.",
                    )
                ),
            )
        )
    lines.append(("agent", f"I have {c.time} or {c.time2} on {c.day}. Which works better?"))
    chosen = _ch(r, (c.time, c.time2))
    lines.append(("user", _ch(r, (f"{chosen} works.", f"{chosen}, please.", f"Let's do {chosen}."))))
    lines.append(
        (
            "agent",
            _ch(r, 
                (
                    f"You're booked for {noun} on {c.day} at {chosen}. We'll text you a reminder the day before.",
                    f"All done, I've booked your {noun} for {c.day} at {chosen}.",
                    f"Perfect, you're scheduled for {noun} on {c.day} at {chosen}. Please arrive ten minutes early.",
                )
            ),
        )
    )
    lines.append(("user", _ch(r, ("Great, thank you!", "Perfect, thanks so much.", "Thanks, bye.", "Awesome, appreciate it."))))
    lines.append(("agent", f"You're welcome, {c.first}. See you on {c.day}!"))
    return lines


def _dental_reschedule(c: _Ctx) -> Lines:
    r = c.r
    _, _, noun = _ch(r, _DENTAL_SERVICES)
    old_day = _ch(r, [d for d in _WEEKDAYS if d != c.day])
    return [
        ("agent", _dental_greeting(c)),
        (
            "user",
            _ch(r, 
                (
                    f"Hi, I need to move my {noun} appointment on {old_day}, something came up at work.",
                    f"Hello, this is {c.first} {c.last}. Can I reschedule my {noun} from {old_day}?",
                )
            ),
        ),
        ("agent", "No problem. What day would work better for you?"),
        ("user", _ch(r, (f"Anything on {c.day} afternoon?", f"{c.day} if possible.", f"Maybe {c.day}, late morning?"))),
        ("agent", f"I can do {c.time} on {c.day}."),
        ("user", _ch(r, ("That works.", "Sounds good.", "Okay, perfect."))),
        ("agent", f"Done, I've rescheduled your {noun} to {c.day} at {c.time}. You'll get a new confirmation text."),
        ("user", _ch(r, ("Thank you so much.", "Great, thanks.", "Thanks!"))),
    ]


def _dental_question(c: _Ctx) -> Lines:
    r = c.r
    insurer = _ch(r, _INSURERS)
    topic = _ch(r, ("insurance", "hours", "price"))
    lines: Lines = [("agent", _dental_greeting(c))]
    if topic == "insurance":
        lines += [
            ("user", f"Hi, quick question, do you take {insurer}?"),
            ("agent", f"Yes, we're in network with {insurer} for cleanings and most fillings."),
        ]
    elif topic == "hours":
        lines += [
            ("user", "Hi, what are your hours on Saturday?"),
            ("agent", "On Saturdays we're open from 8 AM to 1 PM."),
        ]
    else:
        price = _ch(r, (95, 120, 149, 180))
        lines += [
            ("user", "How much is a cleaning without insurance?"),
            ("agent", f"A standard cleaning is ${price} without insurance, and x-rays are extra."),
        ]
    lines += [
        ("user", _ch(r, ("Okay, good to know. I'll check my calendar and call back.", "Got it, that helps.", "Alright, thanks."))),
        ("agent", "Happy to help. Have a great day!"),
    ]
    return lines


def _dental_no_availability(c: _Ctx) -> Lines:
    r = c.r
    _, phrase, _ = _ch(r, _DENTAL_SERVICES)
    weeks = _ch(r, ("three", "four", "five"))
    return [
        ("agent", _dental_greeting(c)),
        ("user", f"Hi, can I get {phrase} on {c.day}? It has to be {c.day}."),
        ("agent", f"I'm sorry, we're fully booked on {c.day}s for the next {weeks} weeks."),
        ("user", _ch(r, ("That's too long. Never mind then.", "Hmm, okay, I'll look elsewhere.", "Oh well, forget it."))),
        ("agent", "I understand. I'm sorry we couldn't fit you in."),
    ]


def _dental_emergency(c: _Ctx) -> Lines:
    r = c.r
    return [
        ("agent", _dental_greeting(c)),
        (
            "user",
            _ch(r, 
                (
                    "I cracked a tooth last night and it really hurts.",
                    "I have terrible tooth pain and my jaw is swollen, it's an emergency.",
                    "My filling fell out and the pain is awful.",
                )
            ),
        ),
        ("agent", f"I'm sorry to hear that. We keep emergency slots open. I can see you today at {c.time}."),
        ("user", "Yes please, I'll take it."),
        ("agent", f"You're booked for an emergency visit today at {c.time}. Please bring your ID and insurance card."),
        ("user", _ch(r, ("Thank you so much.", "Thanks, that's a relief.", "Okay, thanks."))),
    ]


def _dental_angry(c: _Ctx) -> Lines:
    r = c.r
    amount = _ch(r, (180, 240, 312, 425))
    return [
        ("agent", _dental_greeting(c)),
        (
            "user",
            _ch(r, 
                (
                    f"I've been waiting two weeks for someone to call me back about a ${amount} bill. This is ridiculous.",
                    f"You charged me ${amount} for a cleaning my insurance covers, and nobody has called me back.",
                )
            ),
        ),
        ("agent", "I'm very sorry about that. I can't see billing details, but I can leave a note for the office manager."),
        ("user", _ch(r, ("That's what they said last time. I want to speak to a manager now.", "That's useless. Put a manager on."))),
        ("agent", "The manager isn't available right now, but I'll flag this as urgent."),
        ("user", _ch(r, ("Unbelievable. This is unacceptable.", "Forget it, I'm done with this office.", "Terrible service."))),
    ]


def _dental_cancel(c: _Ctx) -> Lines:
    r = c.r
    _, _, noun = _ch(r, _DENTAL_SERVICES)
    return [
        ("agent", _dental_greeting(c)),
        ("user", f"Hi, this is {c.first} {c.last}. I need to cancel my {noun} on {c.day}."),
        ("agent", f"Okay, I've cancelled your {noun} on {c.day}. Would you like to pick another date?"),
        ("user", _ch(r, ("Not right now, I'll call when things calm down.", "No, that's fine for now."))),
        ("agent", "Understood. Take care!"),
    ]


def _dental_reminder(c: _Ctx) -> Lines:
    r = c.r
    _, _, noun = _ch(r, _DENTAL_SERVICES)
    return [
        (
            "agent",
            f"Hi, this is {c.persona} from {_CLINIC} calling to confirm {c.first}'s {noun} on {c.day} at {c.time}. "
            "Can you make it?",
        ),
        ("user", _ch(r, ("Yes, I'll be there.", "Yep, still works.", "Yes, confirmed."))),
        ("agent", f"Great, your {noun} is confirmed for {c.day} at {c.time}. See you then!"),
    ]


def _dental_voicemail(c: _Ctx) -> Lines:
    _, _, noun = _ch(c.r, _DENTAL_SERVICES)
    return [
        (
            "agent",
            f"Hi {c.first}, this is {c.persona} from {_CLINIC} calling to remind you about your {noun} on {c.day} "
            f"at {c.time}. Sorry we missed you. Please call us back at {_CLINIC_SPOKEN} if you need to reschedule. Thanks!",
        )
    ]


_DENTAL_INBOUND = (
    (_dental_booking, 34),
    (_dental_reschedule, 12),
    (_dental_question, 16),
    (_dental_no_availability, 8),
    (_dental_emergency, 10),
    (_dental_angry, 8),
    (_dental_cancel, 6),
)


# --- solar outbound (voice) -------------------------------------------------------------------

_SOLAR_PHONE = "+16505550177"
_SOLAR_SPOKEN = "(650) 555-0177"


def _solar_opening(c: _Ctx) -> Lines:
    r = c.r
    return [
        (
            "agent",
            f"Hi, is this {c.first}? This is {c.persona} with SunPeak Solar. We're helping homeowners in "
            f"{_ch(r, _CITIES)} cut their electric bills. Do you have a minute?",
        ),
        ("user", _ch(r, ("Sure, what's this about?", "I guess, make it quick.", "Yeah, go ahead.", "Okay, who is this again?"))),
    ]


def _solar_qualify(c: _Ctx) -> Lines:
    r = c.r
    bill = _ch(r, (140, 165, 180, 210, 235, 260, 290, 320, 410))
    years = _ch(r, ("two", "five", "twelve", "twenty"))
    _, roof = _ch(r, _ROOFS)
    return [
        ("agent", "Great. First, do you own your home?"),
        ("user", _ch(r, (f"Yes, we've owned it for {years} years.", "Yes, I do.", "Yep, bought it last year."))),
        ("agent", "And about how much is your monthly electric bill?"),
        (
            "user",
            _ch(r, 
                (
                    f"Around ${bill} a month, more in the summer.",
                    f"It's usually about {bill} dollars.",
                    f"Last month it was ${bill}.",
                )
            ),
        ),
        ("agent", "What kind of roof do you have: asphalt shingle, tile, metal, or flat?"),
        ("user", f"It's {roof}."),
    ]


def _solar_booked(c: _Ctx) -> Lines:
    r = c.r
    return [
        *_solar_opening(c),
        *_solar_qualify(c),
        ("agent", "You'd likely qualify for our zero-down program. Would you be interested in a free consultation?"),
        ("user", _ch(r, ("Yes, that sounds good.", "Yeah, I'd be interested.", "Sure, why not."))),
        ("agent", f"Great, I've booked your free consultation for {c.day} at {c.time}. A specialist will come by to look at the roof."),
        ("user", _ch(r, ("Perfect, thanks.", "Great, see you then.", "Okay, thank you."))),
    ]


def _solar_too_expensive(c: _Ctx) -> Lines:
    r = c.r
    return [
        *_solar_opening(c),
        *_solar_qualify(c),
        ("agent", "You'd likely qualify for our zero-down program. Would you be interested in a free consultation?"),
        (
            "user",
            _ch(r, 
                (
                    "Honestly, it sounds too expensive for us. Not interested.",
                    "We looked into it last year and it was too expensive. I'm not interested.",
                )
            ),
        ),
        ("agent", "I understand. If anything changes, feel free to reach out. Have a good day."),
    ]


def _solar_renter(c: _Ctx) -> Lines:
    r = c.r
    return [
        *_solar_opening(c),
        ("agent", "Great. First, do you own your home?"),
        ("user", _ch(r, ("No, we're renting, so it's not our call.", "No, I'm renting at the moment."))),
        ("agent", "Got it, our program is only for homeowners right now. Thanks for your time!"),
        ("user", "Okay, bye."),
    ]


def _solar_callback(c: _Ctx) -> Lines:
    r = c.r
    return [
        *_solar_opening(c)[:1],
        ("user", _ch(r, ("I'm driving right now. Can you call me back next week?", "I'm at work, can you try me another time?"))),
        ("agent", f"Of course, I'll call you back on {c.day} around {c.time}. Drive safe!"),
        ("user", "Thanks."),
    ]


def _solar_angry(c: _Ctx) -> Lines:
    r = c.r
    return [
        *_solar_opening(c)[:1],
        ("user", _ch(r, ("How did you get this number? Stop calling me, this is the third time this week!", "Take me off your list. I'm sick of these calls."))),
        ("agent", "I apologize. I'll remove your number from our list right away."),
        ("user", _ch(r, ("You people are ridiculous. Don't call again.", "This is harassment. Terrible."))),
    ]


def _solar_send_info(c: _Ctx) -> Lines:
    return [
        *_solar_opening(c),
        *_solar_qualify(c)[:4],
        ("agent", "Would you be interested in a free consultation?"),
        ("user", f"Maybe. Can you send me some information first? My email is {c.email}."),
        ("agent", f"Absolutely, I've sent our brochure to {c.email}. I'll follow up next week."),
        ("user", "Okay, thanks."),
    ]


def _solar_voicemail(c: _Ctx) -> Lines:
    return [
        (
            "agent",
            _ch(c.r, 
                (
                    f"Hi {c.first}, this is {c.persona} with SunPeak Solar. Sorry I missed you. I'm calling about "
                    f"lowering your electric bill with solar. Give us a call back at {_SOLAR_SPOKEN}. Thanks!",
                    f"Hello, this message is for {c.first} {c.last}. This is {c.persona} from SunPeak Solar, I'm "
                    f"leaving you a voicemail about our zero-down solar program. Call us at {_SOLAR_SPOKEN}. Have a good one.",
                )
            ),
        )
    ]


_SOLAR_LIVE = (
    (_solar_booked, 26),
    (_solar_too_expensive, 14),
    (_solar_renter, 10),
    (_solar_callback, 10),
    (_solar_angry, 8),
    (_solar_send_info, 10),
)


# --- billing chat -----------------------------------------------------------------------------


def _billing_refund(c: _Ctx) -> Lines:
    r = c.r
    plan = _ch(r, _PLANS)
    amount = _ch(r, ("19.99", "29.99", "49", "79.50", "120", "12.99"))
    closing = _ch(r, 
        (
            ("agent", "Is there anything else I can help with?"),
            ("agent", "Glad I could get that resolved for you!"),
        )
    )
    return [
        ("user", _ch(r, (f"Hi, I was charged twice for my {plan} plan this month.", f"Why do I see two charges for {plan} on my card?"))),
        ("agent", "Sorry about that! Can you confirm the email on the account?"),
        ("user", f"Sure, it's {c.email}."),
        ("agent", f"Thanks. I see a duplicate charge of ${amount}. I've issued a refund of ${amount}; it will show in 5 to 7 business days."),
        ("user", _ch(r, ("Great, thanks for the quick help!", "Perfect, thank you.", "Okay, thanks."))),
        closing,
    ]


def _billing_invoice(c: _Ctx) -> Lines:
    r = c.r
    month = _ch(r, _MONTHS)
    return [
        ("user", _ch(r, (f"I need a copy of my invoice for {month} for my accountant.", f"Can you resend the {month} invoice?"))),
        ("agent", "Of course. Which email should I send it to?"),
        ("user", f"{c.email} please."),
        ("agent", f"Done, I've emailed the {month} invoice to {c.email}."),
        ("user", _ch(r, ("Got it, thank you.", "Thanks, that was fast!"))),
    ]


def _billing_plan_change(c: _Ctx) -> Lines:
    r = c.r
    old, new = r.sample(_PLANS, 2)
    price = _ch(r, (15, 29, 49, 99))
    return [
        ("user", _ch(r, (f"Hi, I'd like to change my plan from {old} to {new}.", f"Can I switch my plan to {new}? I'm on {old} now."))),
        ("agent", f"Sure! {new} is ${price} per month. Shall I make the plan change now?"),
        ("user", "Yes please."),
        ("agent", f"All set, I've switched your account to {new}, starting next billing cycle."),
        ("user", _ch(r, ("Perfect.", "Great, thanks!", "Thank you."))),
    ]


def _billing_payment_failed(c: _Ctx) -> Lines:
    r = c.r
    last4 = f"{_rr(r, 1000, 9999)}"
    amount = _ch(r, ("19.99", "29.99", "49", "99", "149"))
    return [
        (
            "user",
            _ch(
                r,
                (
                    "My card payment failed and now my account says suspended.",
                    f"Payment failed again for the ${amount} renewal, what's going on?",
                    f"Hi, my card ending in {last4} got declined and I can't log in.",
                ),
            ),
        ),
        ("agent", f"I'm sorry about the failed payment, {c.first}. I've sent a secure link to {c.email} so you can update your card."),
        ("user", _ch(r, ("Updated it. Is it working now?", f"Done, I added a new card ending in {last4}.", "Okay, updated."))),
        ("agent", f"Yes, the ${amount} payment went through and your account is active again. You're all set."),
        ("user", _ch(r, ("Great, thanks.", "Awesome, thank you!", "Okay.", "Thanks for sorting that out."))),
    ]


def _billing_angry(c: _Ctx) -> Lines:
    r = c.r
    amount = _ch(r, ("45", "89.99", "120", "240", "310"))
    nth, count = _ch(r, (("second", "two"), ("third", "three"), ("fourth", "four")))
    return [
        (
            "user",
            _ch(
                r,
                (
                    f"This is the {nth} time I'm writing about the same wrong ${amount} charge. Unacceptable.",
                    f"I was overcharged ${amount} AGAIN. This is ridiculous.",
                    f"Why am I still being billed ${amount} after I downgraded? I've asked {count} times now.",
                ),
            ),
        ),
        ("agent", "I'm sorry for the trouble. I'm not able to process this refund in chat, so I've escalated it to our billing team."),
        (
            "user",
            _ch(
                r,
                (
                    "So it's still not fixed. I want to cancel my account.",
                    f"Useless. Nobody has helped me in {_ch(r, ('two', 'three', 'five'))} weeks.",
                    "Unbelievable. I want to speak to a manager.",
                ),
            ),
        ),
        ("agent", f"I understand your frustration, {c.first}. The billing team will email {c.email} within 24 hours."),
    ]


_BILLING_ENDED = (
    (_billing_refund, 26),
    (_billing_invoice, 16),
    (_billing_plan_change, 16),
    (_billing_payment_failed, 12),
    (_billing_angry, 10),
)


# --- records ----------------------------------------------------------------------------------


def _weighted(pool: tuple[tuple[Any, int], ...]) -> tuple[list[Any], list[int]]:
    items = [p[0] for p in pool]
    cum, total = [], 0
    for _, w in pool:
        total += w
        cum.append(total)
    return items, cum


def _pick(r: random.Random, table: tuple[list[Any], list[int]]) -> Any:
    items, cum = table
    x = r.random() * cum[-1]
    for item, edge in zip(items, cum):
        if x < edge:
            return item
    return items[-1]


_DENTAL_TABLE = _weighted(_DENTAL_INBOUND)
_SOLAR_TABLE = _weighted(_SOLAR_LIVE)
_BILLING_TABLE = _weighted(_BILLING_ENDED)


class _Ids:
    """Random hex ids from the seeded generator, never repeated within one data set."""

    def __init__(self, r: random.Random):
        self.r = r
        self.seen: set[str] = set()

    def make(self, prefix: str, digits: int) -> str:
        while True:
            value = f"{prefix}{self.r.getrandbits(digits * 4):0{digits}x}"
            if value not in self.seen:
                self.seen.add(value)
                return value


def _phone(r: random.Random) -> str:
    return f"+1{_ch(r, _AREAS)}555{_rr(r, 0, 10_000):04d}"


def _transcript(lines: Lines) -> str:
    return "\n".join(f"{'Agent' if role == 'agent' else 'User'}: {text}" for role, text in lines)


def _speech(lines: Lines, with_words: bool) -> tuple[list[dict[str, Any]], float]:
    """The transcript_object and the spoken length in seconds (about 2.6 words a second)."""
    clock = 60  # centiseconds
    out: list[dict[str, Any]] = []
    for role, text in lines:
        item: dict[str, Any] = {"role": role, "content": text}
        if with_words:
            timed = []
            for w in text.split():
                end = clock + 18 + 5 * len(w)
                timed.append({"word": w, "start": clock / 100, "end": end / 100})
                clock = end + 6
            item["words"] = timed
        else:
            clock += 38 * (text.count(" ") + 1)
        clock += 90
        out.append(item)
    return out, clock / 100


def _version_at(published_ms: list[int], ts: int) -> int:
    version = 0
    for v, at in enumerate(published_ms[:_DRAFT]):
        if at <= ts:
            version = v
    return version


def iter_demo_records(
    seed: int = 7, *, calls: int = 320, chats: int = 72, now_ms: int | None = None
) -> Iterator[dict[str, Any]]:
    """Yield agent versions, then calls, then chats (each in time order), deterministically from `seed`."""
    now = DEFAULT_NOW_MS if now_ms is None else now_ms
    r = random.Random(seed)
    ids = _Ids(r)

    agents: dict[str, tuple[str, list[int]]] = {}
    for spec in _AGENTS:
        agent_id = ids.make("agent_", 10)
        jitter = _rr(r, 0, 3_600_000)
        stamps = [now - int(days * DAY_MS) + jitter for days in spec.published_days_ago]
        agents[spec.key] = (agent_id, stamps)
        for number, stamp in enumerate(stamps):
            yield _agent_record(agent_id, spec, number, stamp)

    start = now - SPAN_MS
    step = (SPAN_MS - 600_000) / max(calls, 1)
    for i in range(calls):
        ts = start + int((i + r.random()) * step)
        # The two newest calls of a realistic data set are still live.
        live = None
        if calls >= 10 and i >= calls - 2:
            live = "ongoing" if i == calls - 1 else "registered"
        yield _call(r, ids, agents, ts, now, live=live)

    step = (SPAN_MS - 600_000) / max(chats, 1)
    for i in range(chats):
        ts = start + int((i + r.random()) * step)
        yield _chat(r, ids, agents["billing"], ts, now, ongoing=chats >= 10 and i == chats - 1)


def generate_demo_records(
    seed: int = 7, *, calls: int = 320, chats: int = 72, now_ms: int | None = None
) -> list[dict[str, Any]]:
    """The demo data set as a list: agent versions, a few hundred calls and dozens of chats."""
    return list(iter_demo_records(seed, calls=calls, chats=chats, now_ms=now_ms))


def _call(
    r: random.Random,
    ids: _Ids,
    agents: dict[str, tuple[str, list[int]]],
    ts: int,
    now: int,
    live: str | None,
) -> dict[str, Any]:
    c = _ctx(r)
    dental = live is not None or r.random() < 0.55
    agent_id, published = agents["dental" if dental else "solar"]
    roll = r.random()
    status, reason, lines = "ended", "user_hangup", []
    metadata: dict[str, Any]

    if dental:
        outbound = live is None and roll < 0.16
        metadata = {"patient_id": f"P-{_rr(r, 10_000, 99_999)}"} if r.random() < 0.6 else {}
        if outbound:
            metadata["campaign"] = "appointment-reminders"
            sub = r.random()
            if sub < 0.2:
                status, reason = "not_connected", _ch(r, ("dial_no_answer", "dial_busy"))
            elif sub < 0.45:
                reason, lines = "voicemail_reached", _dental_voicemail(c)
            else:
                reason, lines = "agent_hangup", _dental_reminder(c)
        else:
            lines = _pick(r, _DENTAL_TABLE)(c)
            reason = _ch(r, ("user_hangup", "user_hangup", "agent_hangup"))
        direction = "outbound" if outbound else "inbound"
        call_type = "web_call" if not outbound and r.random() < 0.15 else "phone_call"
        customer = _phone(r)
        from_number, to_number = (_CLINIC_PHONE, customer) if outbound else (customer, _CLINIC_PHONE)
    else:
        direction, call_type = "outbound", "phone_call"
        metadata = {
            "lead_id": f"L-{_rr(r, 100_000, 999_999)}",
            "campaign": _ch(r, ("fall-2026-bay-area", "homeowners-q4", "referral-program")),
        }
        from_number, to_number = _SOLAR_PHONE, _phone(r)
        if roll < 0.12:
            status, reason = "not_connected", _ch(r, ("dial_no_answer", "dial_no_answer", "dial_busy", "dial_failed"))
        elif roll < 0.28:
            reason, lines = "voicemail_reached", _solar_voicemail(c)
        else:
            lines = _pick(r, _SOLAR_TABLE)(c)
            reason = _ch(r, ("user_hangup", "agent_hangup"))

    if status == "ended" and live is None and r.random() < 0.025:
        # The call broke off partway through.
        status = "error"
        reason = _ch(r, ("error_llm_websocket_runtime", "error_unknown"))
        lines = lines[: max(1, min(len(lines) - 1, 3))]
    if live is not None:
        status, reason = live, None
        # After every regular call, which all start before now - 10 minutes.
        ts = now - (_rr(r, 60_000, 300_000) if live == "ongoing" else _rr(r, 300_000, 600_000))
        lines = _dental_booking(c)[:4] if live == "ongoing" else []

    transcript_object, seconds = _speech(lines, with_words=bool(lines) and r.random() < 0.08)
    if status == "not_connected":
        end: int | None = ts + _rr(r, 8_000, 32_000)
    elif status in ("ongoing", "registered"):
        end = None
    else:
        end = ts + int(seconds * 1000) + _rr(r, 500, 4_000)
    if call_type == "web_call":
        from_number = to_number = None
    return {
        "call_id": ids.make("call_", 12),
        "call_type": call_type,
        "agent_id": agent_id,
        "agent_version": _version_at(published, ts),
        "call_status": status,
        "direction": direction,
        "from_number": from_number,
        "to_number": to_number,
        "start_timestamp": ts,
        "end_timestamp": end,
        "duration_ms": None if end is None else end - ts,
        "disconnection_reason": reason,
        "transcript": _transcript(lines),
        "transcript_object": transcript_object,
        "metadata": metadata,
    }


def _chat(r: random.Random, ids: _Ids, agent: tuple[str, list[int]], ts: int, now: int, ongoing: bool) -> dict[str, Any]:
    agent_id, published = agent
    c = _ctx(r)
    status = "ended"
    lines = _pick(r, _BILLING_TABLE)(c)
    if ongoing:
        status = "ongoing"
        # After every regular chat, with its messages still in the past.
        ts = now - _rr(r, 240_000, 600_000)
        lines = lines[:2]
    elif r.random() < 0.03:
        status = "error"
        lines = lines[:1]
    chat_id = ids.make("chat_", 12)
    messages = []
    clock = ts
    for n, (role, text) in enumerate(lines, start=1):
        messages.append({"message_id": f"m{n}", "role": role, "content": text, "created_timestamp": clock})
        clock += _rr(r, 8_000, 95_000)
    end = None if status == "ongoing" else messages[-1]["created_timestamp"]
    return {
        "chat_id": chat_id,
        "chat_type": _ch(r, ("api_chat", "api_chat", "sms_chat")),
        "agent_id": agent_id,
        "version": _version_at(published, ts),
        "chat_status": status,
        "start_timestamp": ts,
        "end_timestamp": end,
        "transcript": _transcript(lines),
        "message_with_tool_calls": messages,
        "messages": [{"role": role, "content": text} for role, text in lines],
        "metadata": {"customer_id": f"cus_{r.getrandbits(40):010x}"},
    }
