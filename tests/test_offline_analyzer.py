"""The offline analyzer: what a user sees when no Gemini key is set."""

from __future__ import annotations

import dataclasses
import re

import pytest

from graphql_api.analysis.base import (
    DEFAULT_SUCCESSFUL_PROMPT,
    AnalysisConfig,
    Conversation,
    DataField,
    Utterance,
)
from graphql_api.analysis.offline import OfflineAnalyzer, analyze_offline, summary_limits
from graphql_api.analysis.pricing import cost_usd

BOOKING = (
    ("agent", "Riverside Dental, how can I help?"),
    ("user", "Hi, I'd like to book a cleaning for next Tuesday."),
    ("agent", "Of course. How many people is the appointment for?"),
    ("user", "It's for three people, me and my two kids."),
    ("agent", "Are you a new patient with us?"),
    ("user", "Yes, we just moved here."),
    ("agent", "I have 10 AM or 2 PM on Tuesday."),
    ("user", "2 PM works."),
    ("agent", "You're booked for a cleaning Tuesday at 2 PM."),
    ("user", "Great, thanks so much for fitting us in!"),
)
QUESTION_ONLY = (
    ("agent", "Riverside Dental, how can I help?"),
    ("user", "Hi, what are your hours on Saturday?"),
    ("agent", "On Saturdays we're open from 8 AM to 1 PM."),
    ("user", "Okay, good to know."),
)
NO_OPENINGS = (
    ("agent", "Riverside Dental, how can I help?"),
    ("user", "Can I get a checkup on Friday?"),
    ("agent", "I'm sorry, we're fully booked on Fridays for the next three weeks."),
    ("user", "Oh well, never mind."),
)
ANGRY = (
    ("agent", "Acme billing, how can I help?"),
    ("user", "You charged me twice again. This is ridiculous and unacceptable!"),
    ("agent", "I'm sorry, I'm not able to process refunds in chat. I've escalated it."),
    ("user", "Useless. I want to speak to a manager."),
)
HAPPY = (
    ("agent", "Acme billing, how can I help?"),
    ("user", "I was charged twice this month."),
    ("agent", "Sorry about that. I've issued a refund of $29.99 for the duplicate charge."),
    ("user", "Perfect, thank you so much, that was really helpful!"),
)
VOICEMAIL = (
    (
        "agent",
        "Hi Maria, this is Sam with SunPeak Solar. Sorry I missed you, I'm calling about lowering your "
        "electric bill. Please call us back at (650) 555-0177.",
    ),
)


def conv(lines, *, kind="CALL", status="ended", reason="user_hangup", with_utterances=True) -> Conversation:
    transcript = "\n".join(f"{'Agent' if role == 'agent' else 'User'}: {text}" for role, text in lines)
    utterances = tuple(Utterance(role, text) for role, text in lines) if with_utterances else ()
    return Conversation(
        id="call_test",
        kind=kind,
        transcript=transcript,
        utterances=utterances,
        status=status,
        disconnection_reason=reason,
    )


def config(**kwargs) -> AnalysisConfig:
    return AnalysisConfig(model="offline", **kwargs)


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def test_same_input_gives_the_same_outcome():
    cfg = config(
        data_fields=(
            DataField("visit_type", "ENUM", choices=("cleaning", "checkup")),
            DataField("party_size", "NUMBER", "How many people the booking is for"),
        )
    )
    first = analyze_offline(conv(BOOKING), cfg)
    second = analyze_offline(conv(BOOKING), cfg)
    assert first == second
    assert first.summary and first.custom_data == {"visit_type": "cleaning", "party_size": 3}


async def test_analyzer_interface_reports_model_offline_and_costs_nothing():
    analyzer = OfflineAnalyzer()
    outcome = await analyzer.analyze(conv(BOOKING), config())
    assert analyzer.name == "offline"
    assert outcome.model == "offline"
    assert outcome.input_tokens > 0 and outcome.output_tokens > 0
    assert cost_usd(outcome.model, outcome.input_tokens, outcome.output_tokens) == 0


def test_token_usage_grows_with_the_transcript_and_the_prompt():
    short = analyze_offline(conv(QUESTION_ONLY), config())
    long = analyze_offline(conv(BOOKING), config())
    assert long.input_tokens > short.input_tokens
    assert short.input_tokens >= len(conv(QUESTION_ONLY).transcript) // 4
    longer_prompt = config(summary_prompt="Summarize the call. " * 20)
    assert analyze_offline(conv(QUESTION_ONLY), longer_prompt).input_tokens > short.input_tokens


def test_a_plain_transcript_reads_like_utterances():
    cfg = config(data_fields=(DataField("visit_type", "ENUM", choices=("cleaning", "checkup")),))
    from_text = analyze_offline(conv(BOOKING, with_utterances=False), cfg)
    from_utterances = analyze_offline(conv(BOOKING), cfg)
    assert from_text == from_utterances


# --- summary ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "limit"),
    [
        ("Write a 1\u20135 word summary of the call.", 5),
        ("Write a 1-5 word summary of the call.", 5),
        ("Summarize in 10 words or less.", 10),
        ("Summarize it in a single word.", 1),
    ],
)
def test_summary_respects_a_word_limit_in_the_prompt(prompt, limit):
    summary = analyze_offline(conv(BOOKING), config(summary_prompt=prompt)).summary
    assert summary
    assert 1 <= len(summary.split()) <= limit, summary


def test_five_word_summary_still_says_what_happened():
    summary = analyze_offline(conv(BOOKING), config(summary_prompt="Write a 1\u20135 word summary of the call."))
    assert "booked" in summary.summary.lower()
    assert "cleaning" in summary.summary.lower()


def test_summary_respects_sentence_limits():
    default = analyze_offline(conv(BOOKING), config()).summary
    one = analyze_offline(conv(BOOKING), config(summary_prompt="Summarize the call in one sentence.")).summary
    two = analyze_offline(conv(BOOKING), config(summary_prompt="Summarize the call in two sentences.")).summary
    # The default prompt asks for 1 to 3 sentences; this call has enough to fill three.
    assert len(sentences(default)) == 3
    assert len(sentences(one)) == 1
    assert len(sentences(two)) == 2
    assert "cleaning" in one


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Write a 1\u20135 word summary of the call.", (5, None)),
        ("Keep it under 20 words.", (19, None)),
        ("No more than two sentences.", (None, 2)),
        ("Write a 1 to 3 sentence summary of the conversation based on the transcript.", (None, 3)),
        ("Summarize the call.", (None, None)),
        ("Write at least 50 words.", (None, None)),
    ],
)
def test_summary_limits_are_read_from_the_prompt(prompt, expected):
    assert summary_limits(prompt) == expected


def test_summary_of_a_call_that_never_connected():
    outcome = analyze_offline(
        conv((), status="not_connected", reason="dial_no_answer"),
        config(data_fields=(DataField("party_size", "NUMBER"),)),
    )
    assert "did not connect" in outcome.summary
    assert outcome.successful is False
    assert outcome.user_sentiment == "UNKNOWN"
    assert outcome.in_voicemail is False
    assert outcome.custom_data == {"party_size": None}


# --- voicemail -------------------------------------------------------------------------------


def test_one_sided_voicemail_message_is_detected_from_the_words():
    outcome = analyze_offline(conv(VOICEMAIL, reason="agent_hangup"), config())
    assert outcome.in_voicemail is True
    assert outcome.successful is False
    assert outcome.user_sentiment == "UNKNOWN"
    assert "voicemail" in outcome.summary.lower()


def test_voicemail_greeting_from_the_callee_is_detected():
    lines = (
        ("user", "You've reached Maria. Please leave a message after the tone."),
        ("agent", "Hi Maria, this is Sam from SunPeak Solar, call us back when you can."),
    )
    assert analyze_offline(conv(lines, reason="agent_hangup"), config()).in_voicemail is True


def test_voicemail_reached_disconnection_counts_even_without_cues():
    lines = (("agent", "Hello, this is Riverside Dental with a reminder about your appointment."),)
    assert analyze_offline(conv(lines, reason="voicemail_reached"), config()).in_voicemail is True


def test_live_caller_asking_to_leave_a_message_is_not_voicemail():
    lines = (
        ("agent", "Riverside Dental, how can I help?"),
        ("user", "Can I leave a message for Dr. Patel?"),
        ("agent", "Sure, go ahead."),
        ("user", "Please tell her my crown feels loose."),
    )
    assert analyze_offline(conv(lines), config()).in_voicemail is False
    assert analyze_offline(conv(BOOKING), config()).in_voicemail is False


def test_chats_have_no_voicemail_flag():
    assert analyze_offline(conv(HAPPY, kind="CHAT", reason=None), config()).in_voicemail is None


# --- sentiment -------------------------------------------------------------------------------


def test_angry_user_is_negative_and_happy_user_is_positive():
    assert analyze_offline(conv(ANGRY, kind="CHAT"), config()).user_sentiment == "NEGATIVE"
    assert analyze_offline(conv(HAPPY, kind="CHAT"), config()).user_sentiment == "POSITIVE"
    assert analyze_offline(conv(QUESTION_ONLY), config()).user_sentiment == "NEUTRAL"


def test_sentiment_reads_only_what_the_user_said():
    lines = (
        ("agent", "This is terrible, awful, ridiculous news, I hate to tell you."),
        ("user", "Okay, what is it?"),
        ("agent", "Your order ships on Monday."),
        ("user", "Alright."),
    )
    assert analyze_offline(conv(lines), config()).user_sentiment == "NEUTRAL"


def test_negated_praise_is_negative():
    lines = (("agent", "How was your visit?"), ("user", "Not good at all, I'm not happy with it."))
    assert analyze_offline(conv(lines), config()).user_sentiment == "NEGATIVE"


# --- successful ------------------------------------------------------------------------------


def test_successful_prompt_about_booking_requires_a_booking():
    booking_prompt = config(successful_prompt="Successful if an appointment was booked or rescheduled.")
    assert analyze_offline(conv(QUESTION_ONLY), config(successful_prompt=DEFAULT_SUCCESSFUL_PROMPT)).successful is True
    assert analyze_offline(conv(QUESTION_ONLY), booking_prompt).successful is False
    assert analyze_offline(conv(BOOKING), booking_prompt).successful is True
    assert analyze_offline(conv(NO_OPENINGS), booking_prompt).successful is False


def test_angry_unresolved_and_errored_conversations_are_unsuccessful():
    assert analyze_offline(conv(ANGRY, kind="CHAT"), config()).successful is False
    assert analyze_offline(conv(HAPPY, kind="CHAT"), config()).successful is True
    assert analyze_offline(conv(BOOKING[:3], status="error", reason="error_unknown"), config()).successful is False


def test_a_refund_after_a_complaint_is_a_success():
    lines = (
        ("user", "I was charged twice, this is annoying."),
        ("agent", "I'm sorry. I've issued a refund for the duplicate charge."),
        ("user", "Okay, thanks."),
    )
    cfg = config(successful_prompt="Successful if the customer's billing issue was resolved in the chat.")
    assert analyze_offline(conv(lines, kind="CHAT"), cfg).successful is True


def test_required_field_left_empty_makes_the_conversation_unsuccessful():
    field = DataField("insurance_plan", "ENUM", "Insurance plan", choices=("gold", "silver"))
    optional = analyze_offline(conv(BOOKING), config(data_fields=(field,)))
    required = analyze_offline(conv(BOOKING), config(data_fields=(dataclasses.replace(field, required=True),)))
    assert optional.successful is True
    assert required.custom_data == {"insurance_plan": None}
    assert required.successful is False


# --- custom fields ---------------------------------------------------------------------------


def test_enum_takes_the_choice_the_conversation_names():
    visit = DataField("visit_type", "ENUM", "Kind of visit", choices=("cleaning", "checkup", "emergency", "other"))
    menu = (
        ("agent", "We offer cleanings, checkups and emergency visits. Which do you need?"),
        ("user", "It's not an emergency, I just need a checkup."),
    )
    assert analyze_offline(conv(BOOKING), config(data_fields=(visit,))).custom_data["visit_type"] == "cleaning"
    assert analyze_offline(conv(menu), config(data_fields=(visit,))).custom_data["visit_type"] == "checkup"
    assert analyze_offline(conv(QUESTION_ONLY), config(data_fields=(visit,))).custom_data["visit_type"] is None


def test_enum_choice_with_several_words_matches_in_any_order():
    issue = DataField("issue", "ENUM", choices=("refund", "plan_change"))
    lines = (("user", "Hi, I'd like to change my plan to Pro."), ("agent", "Done, you're on Pro now."))
    assert analyze_offline(conv(lines, kind="CHAT"), config(data_fields=(issue,))).custom_data["issue"] == "plan_change"


def test_number_stated_in_words_digits_or_money():
    party = DataField("party_size", "NUMBER", "How many people the booking is for")
    bill = DataField("monthly_bill_usd", "NUMBER", "Average monthly electricity bill in US dollars")
    solar = (
        ("agent", "About how much is your monthly electric bill?"),
        ("user", "Around $1,250 a month in the summer, we've lived here twelve years."),
    )
    answered = (("agent", "How many people will be coming in?"), ("user", "Four of us."))
    assert analyze_offline(conv(BOOKING), config(data_fields=(party,))).custom_data["party_size"] == 3
    assert analyze_offline(conv(solar), config(data_fields=(bill,))).custom_data["monthly_bill_usd"] == 1250
    assert analyze_offline(conv(answered), config(data_fields=(party,))).custom_data["party_size"] == 4


def test_times_and_durations_are_not_taken_for_numbers():
    party = DataField("party_size", "NUMBER", "How many people the booking is for")
    lines = (
        ("user", "I'd like to book a cleaning."),
        ("agent", "You're booked for Tuesday at 2 PM, we're fully booked for the next three weeks after that."),
    )
    assert analyze_offline(conv(lines), config(data_fields=(party,))).custom_data["party_size"] is None


def test_boolean_from_an_answered_question_or_the_outcome():
    new_patient = DataField("new_patient", "BOOLEAN", "Is the caller a new patient?")
    booked = DataField("appointment_booked", "BOOLEAN", "Did the caller book an appointment?")
    returning = (("agent", "Are you a new patient with us?"), ("user", "No, I've been coming for years."))
    cfg = config(data_fields=(new_patient, booked))
    assert analyze_offline(conv(BOOKING), cfg).custom_data == {"new_patient": True, "appointment_booked": True}
    assert analyze_offline(conv(returning), cfg).custom_data["new_patient"] is False
    assert analyze_offline(conv(NO_OPENINGS), cfg).custom_data == {"new_patient": None, "appointment_booked": False}


def test_boolean_from_a_plain_statement_and_its_negation():
    interested = DataField("interested", "BOOLEAN", "Is the homeowner interested in solar?")
    yes = (("agent", "Thoughts on solar?"), ("user", "I'm interested, tell me more."))
    no = (("agent", "Thoughts on solar?"), ("user", "Honestly I'm not interested."))
    assert analyze_offline(conv(yes), config(data_fields=(interested,))).custom_data["interested"] is True
    assert analyze_offline(conv(no), config(data_fields=(interested,))).custom_data["interested"] is False


def test_string_from_examples_kind_or_a_stated_phrase():
    day = DataField("preferred_day", "STRING", "Day the caller prefers", examples=("Monday", "next Friday"))
    email = DataField("account_email", "STRING", "Email on the account", examples=("jane@example.com",))
    name = DataField("customer_name", "STRING", "Customer's full name")
    lines = (
        ("agent", "Can I get your details?"),
        ("user", "Sure, my name is Dana Whitfield and my email is dana.w@example.org."),
    )
    cfg = config(data_fields=(day, email, name))
    data = analyze_offline(conv(lines, kind="CHAT"), cfg).custom_data
    assert data == {"preferred_day": None, "account_email": "dana.w@example.org", "customer_name": "Dana Whitfield"}
    assert analyze_offline(conv(BOOKING), config(data_fields=(day,))).custom_data["preferred_day"] == "next Tuesday"
