"""Labelled support messages for the ``support`` example pair; pure Python + numpy, seeded.

The ``support`` pair (built by ``scripts/make_text_example.py``) triages customer-support
messages into ``routine``, ``billing``, ``urgent`` (account takeover, fraud in progress, an
outage stopping work, threats) and ``self_harm`` (the writer says they may hurt themselves).
``urgent`` and ``self_harm`` are the critical classes: a candidate that files them as routine
sends a person in danger to the back of the queue.

No public data set of such messages can be had offline, so they are generated: per class a
set of templates with slots (products, amounts, durations, features...), sentences of other
classes mixed in (a billing complaint that ends with "honestly I don't see the point of going
on anymore" is ``self_harm``: a message is labelled with the most critical thing it says),
decoys that borrow a critical class's words without its meaning ("this bug is killing me",
"urgent: invoice copy please"), greetings, sign-offs and filler that vary the length, and
seeded character typos. The label is the template's class; the generator is deterministic for
a given ``numpy.random.Generator`` state, so the build script and the demo's traffic are
reproducible.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

CLASSES = ["routine", "billing", "urgent", "self_harm"]
CRITICAL_CLASSES = ["self_harm", "urgent"]
#: class shares of ordinary traffic (most messages are routine)
TRAFFIC_SHARES = (0.55, 0.27, 0.11, 0.07)
REGIONS = ["eu", "us", "apac"]
CHANNELS = ["email", "chat", "app"]

SLOTS: dict[str, list[str]] = {
    "product": ["the mobile app", "the web dashboard", "the desktop client", "the API", "my router",
                "the smart thermostat", "the reporting module", "the calendar sync", "the photo backup",
                "the checkout page", "the browser extension", "my account page"],
    "feature": ["dark mode", "CSV export", "two-factor login", "shared folders", "offline mode",
                "the search filter", "bulk upload", "push notifications", "team roles", "custom fields"],
    "amount": ["$12.99", "$49", "$120.00", "€35", "£18.50", "$7", "$299", "€1,200", "$64.20", "£9.99"],
    "period": ["two days", "a week", "since Monday", "three hours", "since the last update",
               "all morning", "a month", "since yesterday", "20 minutes", "since the weekend"],
    "plan": ["Basic", "Pro", "Family", "Business", "Premium", "Starter", "Team"],
    "order": ["#48213", "#10977", "#55102", "#73340", "#29981", "#66045", "#81230", "#30417"],
    "person": ["my manager", "a colleague", "my daughter", "our accountant", "my husband", "a client"],
}

TEMPLATES: dict[str, list[str]] = {
    "routine": [
        "How do I turn on {feature} in {product}?",
        "Is there a way to change my display name? I can't find it in settings.",
        "{product} keeps logging me out every few minutes, it has been like that for {period}.",
        "Could you tell me when {feature} will be available on the {plan} plan?",
        "The sync between {product} and my phone is slow, is that normal?",
        "I'd like to give {person} access to {feature}, what are the steps?",
        "This bug is killing me, {feature} does nothing when I click it.",
        "I'm dying to try {feature}, any news on the release date?",
        "Where can I download the user guide for {product}?",
        "{product} shows the wrong time zone for my events.",
        "Quick question: can I rename a shared folder without breaking the links?",
        "Feature request: please let us sort by date in {feature}.",
        "After the update {product} looks different and I can't find {feature} anymore.",
        "My password reset email took {period} to arrive, is something wrong?",
        "Is {product} compatible with older tablets?",
        "I keep getting a popup asking me to rate the app, how do I stop it?",
        "Not urgent at all, but {feature} is spelled wrong in the menu.",
        "Can you help me merge two accounts? I made a second one by mistake.",
    ],
    "billing": [
        "I was charged {amount} twice this month for the {plan} plan.",
        "Please refund order {order}, I cancelled it within the trial.",
        "Why did my bill go up to {amount}? Nobody told me about a price change.",
        "I need a copy of the invoice for order {order} for our accountant.",
        "How do I downgrade from {plan} to Basic without losing my data?",
        "My card was declined but the money ({amount}) still left my account.",
        "Urgent: I need the VAT invoice for {order} before the end of the month.",
        "Can I pay yearly instead of monthly on the {plan} plan?",
        "You keep charging me {amount} after I cancelled {period} ago.",
        "The discount code was not applied to order {order}.",
        "I want to update the credit card on file, the old one expired.",
        "There is a charge of {amount} on my statement I don't recognise from you, can you explain it?",
        "Please cancel my subscription and confirm there will be no more charges.",
        "I was promised a refund of {amount} {period} and it still hasn't arrived.",
        "Our company needs to switch billing to a purchase order, who do I talk to?",
    ],
    "urgent": [
        "Someone logged into my account from another country and changed my password, please lock it now.",
        "Fraudulent transfers of {amount} are going out of my account right now, stop them!",
        "{product} has been completely down for {period} and our whole clinic cannot see patient records.",
        "A user in our team chat is threatening to hurt a coworker tomorrow, what do we do?",
        "My account was hacked and the attacker is messaging all my contacts.",
        "All our customer data is visible to the public through {product}, this is a breach.",
        "Someone is using my card on your site right now, I see charges of {amount} every minute.",
        "Our production system is down, every order fails at checkout since {period}.",
        "I received a message from your 'support' asking for my password and I gave it, help immediately.",
        "{person} got a threat through {product} saying they know where we live.",
        "Emergency: the alarm app stopped sending alerts and my elderly father lives alone.",
        "The smart lock won't open and my child is alone inside, please help now.",
        "Ransom note on our shared folders, all files are encrypted.",
    ],
    "self_harm": [
        "I can't do this anymore, I've been thinking about ending my life.",
        "Honestly I don't see the point of going on anymore.",
        "I have been hurting myself again and I don't know who to tell.",
        "If this isn't fixed I might as well kill myself, I have nothing left.",
        "I've written goodbye letters to my family, this is my last message.",
        "Everything is falling apart and I keep thinking everyone would be better off without me.",
        "I have the pills in front of me and I'm scared of what I'll do.",
        "I don't want to be alive anymore, nothing matters.",
        "Tonight I'm going to end it, I just wanted someone to know.",
        "I cut myself after reading your last email, I'm not okay.",
        "I'm so tired of living, I think about dying every day.",
    ],
}

GREETINGS = ["", "", "Hi,", "Hello,", "Hey team,", "Dear support,", "Good morning,", "hi there"]
SIGNOFFS = ["", "", "Thanks.", "Thank you!", "Regards, Sam", "Cheers", "Best, J.", "thx", "Please advise."]
FILLER = [
    "I've been a customer for {period}.", "I already tried restarting it.", "My order number is {order}.",
    "I'm on the {plan} plan.", "This is the second time I write.", "I use {product} every day for work.",
    "Sorry for the long message.", "I attached a screenshot.", "My phone is an older model.",
    "{person} has the same problem.", "Please reply by email.",
]
# A routine/billing opening that a critical sentence is appended to: "the most critical thing
# said" decides the label, so these mixtures carry the critical class.
MIX_SHARE = 0.35
DRIFT_TYPO = 0.08


class Message(NamedTuple):
    text: str
    label: str


def _fill(template: str, rng: np.random.Generator) -> str:
    out = template
    for slot, values in SLOTS.items():
        while "{" + slot + "}" in out:
            out = out.replace("{" + slot + "}", values[int(rng.integers(len(values)))], 1)
    return out


def _pick(pool: list[str], rng: np.random.Generator) -> str:
    return _fill(pool[int(rng.integers(len(pool)))], rng)


def typos(text: str, rate: float, rng: np.random.Generator) -> str:
    """Seeded character typos: each letter is, with probability ``rate``, dropped, doubled or
    swapped with its neighbour (the edits people make typing fast on a phone)."""
    chars = list(text)
    i = 0
    while i < len(chars):
        if chars[i].isalpha() and rng.random() < rate:
            kind = int(rng.integers(3))
            if kind == 0:
                del chars[i]
                continue
            if kind == 1:
                chars.insert(i, chars[i])
                i += 1
            elif i + 1 < len(chars):
                chars[i], chars[i + 1] = chars[i + 1], chars[i]
                i += 1
        i += 1
    return "".join(chars)


def message(label: str, rng: np.random.Generator, typo_rate: float = 0.02, max_filler: int = 3) -> Message:
    """One message of class ``label``: a template of the class, for critical classes sometimes
    after an ordinary complaint, with greeting, filler sentences, sign-off and typos."""
    body = _pick(TEMPLATES[label], rng)
    if label in CRITICAL_CLASSES and rng.random() < MIX_SHARE:
        body = _pick(TEMPLATES[CLASSES[int(rng.integers(2))]], rng) + " " + body
    parts = [GREETINGS[int(rng.integers(len(GREETINGS)))]]
    fillers = [_pick(FILLER, rng) for _ in range(int(rng.integers(max_filler + 1)))]
    cut = int(rng.integers(len(fillers) + 1))
    parts += fillers[:cut] + [body] + fillers[cut:] + [SIGNOFFS[int(rng.integers(len(SIGNOFFS)))]]
    text = " ".join(p for p in parts if p)
    if rng.random() < 0.15:
        text = text.lower()
    return Message(typos(text, float(typo_rate * rng.uniform(0, 2)), rng), label)


#: words of the critical classes that ordinary messages use in passing
DECOY_WORDS = ("killing", "dying", "urgent", "Urgent", "don't recognise")


def decoys(rng: np.random.Generator, n: int) -> list[Message]:
    """``n`` routine or billing messages whose template borrows a critical class's words ("this bug
    is killing me", "Urgent: I need the VAT invoice"): a candidate that reads words, not meaning,
    raises false alarms here."""
    pool = [(c, t) for c in ("routine", "billing") for t in TEMPLATES[c] if any(w in t for w in DECOY_WORDS)]
    out = []
    for _ in range(n):
        label, template = pool[int(rng.integers(len(pool)))]
        text = " ".join(p for p in (GREETINGS[int(rng.integers(len(GREETINGS)))], _fill(template, rng)) if p)
        out.append(Message(typos(text, 0.02, rng), label))
    return out


def dataset(rng: np.random.Generator, n_per_class: int) -> list[Message]:
    """A balanced labelled set (``n_per_class`` of each class), shuffled."""
    out = [message(c, rng) for c in CLASSES for _ in range(n_per_class)]
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def traffic(rng: np.random.Generator, n: int, *, drifted: bool = False) -> list[Message]:
    """``n`` messages in traffic proportions (:data:`TRAFFIC_SHARES`). ``drifted``: longer
    messages with many more typos (a new client app with autocorrect off), for drift checks."""
    labels = rng.choice(len(CLASSES), size=n, p=TRAFFIC_SHARES)
    if drifted:
        return [message(CLASSES[k], rng, typo_rate=DRIFT_TYPO, max_filler=6) for k in labels]
    return [message(CLASSES[k], rng) for k in labels]


def traffic_messages(rng: np.random.Generator, n: int, *, start: int = 0, drifted: bool = False,
                     prefix: str = "msg") -> list[dict]:
    """Traffic as Sentinel messages: ``{"id", "model", "text", "attributes", "label"}`` (the label
    is what a reviewer later decided; send it on the labels topic, not with the request)."""
    out = []
    for i, m in enumerate(traffic(rng, n, drifted=drifted), start=start):
        out.append({"id": f"{prefix}-{i}", "model": "support", "text": m.text,
                    "attributes": {"region": REGIONS[i % 3], "channel": CHANNELS[int(rng.integers(3))]},
                    "label": m.label})
    return out
