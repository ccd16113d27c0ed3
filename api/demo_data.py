"""The demo registry that ``make run`` loads: realistic prompts a new user can explore.

Kept as data next to the command so docs and tests can refer to the same prompts. Each entry is a
prompt and its versions in order; every version goes through the services like an author's would.
"""

from __future__ import annotations

from typing import Any

REFUND_VARIABLES = [
    {"name": "customer_name", "type": "string", "description": "The customer's first name."},
    {"name": "order_id", "type": "string", "description": "The order being refunded."},
    {"name": "refund_amount", "type": "number", "description": "Amount refunded, in euros."},
    {
        "name": "policy_days",
        "type": "integer",
        "required": False,
        "default": 30,
        "description": "Days the customer had to ask for a refund.",
    },
]

TRIAGE_SCHEMA = {
    "type": "object",
    "required": ["category", "priority"],
    "properties": {
        "category": {"enum": ["billing", "delivery", "account", "product", "other"]},
        "priority": {"enum": ["low", "normal", "high", "urgent"]},
        "summary": {"type": "string", "maxLength": 200},
    },
    "additionalProperties": False,
}

# The support chat assistant (issue 15): it calls tools, answers as strict JSON, carries the
# conversation in a ``messages`` variable and includes two snippets.
AGENT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "order_lookup",
            "description": "Find an order by its id: status, items, delivery date.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string", "description": "e.g. A-17"}},
                "required": ["order_id"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "refund_status",
            "description": "Whether a refund was approved for an order, and when it was paid.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    },
]
AGENT_SCHEMA = {
    "type": "object",
    "properties": {
        "reply": {"type": "string", "description": "What the customer reads."},
        "handoff": {"type": "boolean", "description": "A person should take over."},
    },
    "required": ["reply", "handoff"],
    "additionalProperties": False,
}
AGENT_VARIABLES = [
    {"name": "customer_name", "type": "string", "description": "The customer's first name."},
    {
        "name": "conversation",
        "type": "messages",
        "required": False,
        "description": "The chat so far (user and assistant turns), inserted after the context.",
    },
    {"name": "question", "type": "string", "description": "The customer's latest message."},
]


def _agent_version(message: str, instruction: str) -> dict[str, Any]:
    return {
        "message": message,
        "variables": AGENT_VARIABLES,
        "model": {
            "provider": "local",
            "model": "echo-1",
            "parameters": {"temperature": 0.2, "max_tokens": 300},
            "response_schema": AGENT_SCHEMA,
            "tools": AGENT_TOOLS,
            "tool_choice": "auto",
            "parallel_tool_calls": False,
        },
        "templates": {
            "en": {
                # The brand voice follows its own release; the safety rules are pinned.
                "system": "{{ snippet('brand.voice') }}\n\n{{ snippet('rules.safety', version=1) }}",
                "context": "You are chatting with {{ customer_name }} on the shop's help page.",
                "instruction": instruction,
                "format": "Answer as JSON: reply (what the customer reads) and handoff (true when "
                "a person should take over).",
            }
        },
    }


# Each prompt's release steps, applied in order after its versions are committed (service, environment,
# arguments). Production takes only versions that have been stable in staging, so staging goes first.
RELEASES: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "support.refund-reply": [
        ("deploy", "development", {"version": 3}),
        ("deploy", "staging", {"version": 2}),
        ("deploy", "production", {"version": 2}),
        ("deploy", "staging", {"version": 3, "reason": "Refund window reminder, reviewed."}),
        ("canary_start", "production", {"version": 3, "percent": 5, "reason": "First look."}),
        ("canary_percent", "production", {"percent": 10, "reason": "No complaints after a day."}),
    ],
    "support.ticket-triage": [
        ("deploy", "staging", {"version": 1}),
        ("deploy", "production", {"version": 1}),
        ("deploy", "staging", {"version": 2}),
        (
            "experiment_start",
            "production",
            {
                "name": "chargeback-rule",
                "variants": [("control", 1, 50), ("chargeback", 2, 50)],
                "planned_calls": 2000,
                "reason": "Does the chargeback rule change escalations?",
            },
        ),
    ],
    "marketing.product-description": [
        ("deploy", "staging", {"version": 1}),
        ("deploy", "production", {"version": 1}),
        ("deploy", "staging", {"version": 2}),
        (
            "shadow_start",
            "production",
            {"versions": [2], "sample_percent": 20, "reason": "Compare headlines offline."},
        ),
    ],
    "engineering.code-review-summary": [
        ("deploy", "staging", {"version": 1}),
        ("deploy", "production", {"version": 1}),
    ],
    # Snippets are released like prompts; what follows brand.voice serves its stable version.
    "brand.voice": [
        ("deploy", "development", {"version": 2}),
        ("deploy", "staging", {"version": 1}),
        ("deploy", "production", {"version": 1}),
    ],
    "rules.safety": [
        ("deploy", "development", {"version": 1}),
        ("deploy", "staging", {"version": 1}),
        ("deploy", "production", {"version": 1}),
    ],
    "support.agent": [
        ("deploy", "development", {"version": 2}),
        ("deploy", "staging", {"version": 1}),
        ("deploy", "production", {"version": 1}),
        ("deploy", "staging", {"version": 2, "reason": "Looks orders up before answering."}),
        ("canary_start", "production", {"version": 2, "percent": 10, "reason": "Try on 10 %."}),
    ],
    "sales.meeting-recap": [("deploy", "development", {"version": 1})],
    "search.query-rewrite": [
        ("deploy", "staging", {"version": 1}),
        ("deploy", "production", {"version": 1}),
    ],
    "support.faq": [
        ("deploy", "development", {"version": 1}),
        ("deploy", "staging", {"version": 1}),
        ("deploy", "production", {"version": 1}),
    ],
}

PROMPTS: list[dict[str, Any]] = [
    {
        "key": "support.refund-reply",
        "description": "Answers a customer whose refund was approved.",
        "default_locale": "en",
        "tags": ["support", "customer-facing"],
        "versions": [
            {
                "message": "First version, reviewed by the support leads.",
                "variables": REFUND_VARIABLES,
                "model": {
                    "provider": "local",
                    "model": "echo-1",
                    "parameters": {"temperature": 0.3, "max_tokens": 400},
                },
                "templates": {
                    "en": {
                        "system": "You are a courteous support agent for an online shop.",
                        "context": "Order {{ order_id }} was refunded: {{ refund_amount }} EUR.",
                        "instruction": "Tell {{ customer_name }} the refund is on its way.",
                        "format": "Two short paragraphs. No emoji.",
                    },
                    "fr": {
                        "system": "Tu es un agent du service client d'une boutique en ligne, "
                        "toujours courtois.",
                        "context": "La commande {{ order_id }} a été remboursée : "
                        "{{ refund_amount }} EUR.",
                        "instruction": "Annonce à {{ customer_name }} que le remboursement "
                        "est en route.",
                        "format": "Deux paragraphes courts. Pas d'emoji.",
                    },
                },
            },
            {
                "message": "Mention the delay before the money arrives; customers kept asking.",
                "variables": REFUND_VARIABLES,
                "model": {
                    "provider": "local",
                    "model": "echo-1",
                    "parameters": {"temperature": 0.3, "max_tokens": 400},
                },
                "templates": {
                    "en": {
                        "system": "You are a courteous support agent for an online shop.",
                        "context": "Order {{ order_id }} was refunded: {{ refund_amount }} EUR. "
                        "Refunds reach the card within 5 business days.",
                        "instruction": "Tell {{ customer_name }} the refund is on its way "
                        "and when to expect it.",
                        "format": "Two short paragraphs. No emoji.",
                    },
                    "fr": {
                        "system": "Tu es un agent du service client d'une boutique en ligne, "
                        "toujours courtois.",
                        "context": "La commande {{ order_id }} a été remboursée : "
                        "{{ refund_amount }} EUR. Le remboursement arrive sur la carte "
                        "sous 5 jours ouvrés.",
                        "instruction": "Annonce à {{ customer_name }} que le remboursement est en "
                        "route et quand il arrivera.",
                        "format": "Deux paragraphes courts. Pas d'emoji.",
                    },
                },
            },
            {
                "message": "Remind the customer of the refund window (English first; French to "
                "follow, so it shows as stale).",
                "variables": REFUND_VARIABLES,
                "model": {
                    "provider": "local",
                    "model": "echo-1",
                    "parameters": {"temperature": 0.2, "max_tokens": 400},
                    "fallbacks": [
                        {
                            "provider": "local",
                            "model": "echo-small",
                            "parameters": {"temperature": 0.2},
                        }
                    ],
                },
                "templates": {
                    "en": {
                        "system": "You are a courteous support agent for an online shop.",
                        "context": "Order {{ order_id }} was refunded: {{ refund_amount }} EUR. "
                        "Refunds reach the card within 5 business days. Customers have "
                        "{{ policy_days }} days to ask for a refund.",
                        "instruction": "Tell {{ customer_name }} the refund is on its way "
                        "and when to expect it.",
                        "format": "Two short paragraphs. No emoji.",
                    },
                    "fr": {
                        "system": "Tu es un agent du service client d'une boutique en ligne, "
                        "toujours courtois.",
                        "context": "La commande {{ order_id }} a été remboursée : "
                        "{{ refund_amount }} EUR. Le remboursement arrive sur la carte "
                        "sous 5 jours ouvrés.",
                        "instruction": "Annonce à {{ customer_name }} que le remboursement est en "
                        "route et quand il arrivera.",
                        "format": "Deux paragraphes courts. Pas d'emoji.",
                    },
                },
            },
        ],
    },
    {
        "key": "support.ticket-triage",
        "description": "Sorts an incoming ticket into a category and a priority, as JSON.",
        "default_locale": "en",
        "tags": ["support", "classification"],
        "versions": [
            {
                "message": "Triage into five categories.",
                "variables": [
                    {
                        "name": "ticket",
                        "type": "string",
                        "description": "The ticket's subject and body.",
                    }
                ],
                "model": {
                    "provider": "local",
                    "model": "echo-1",
                    "parameters": {"temperature": 0, "seed": 7},
                    "response_schema": TRIAGE_SCHEMA,
                },
                "templates": {
                    "en": {
                        "system": "You triage customer support tickets.",
                        "context": "Ticket:\n{{ ticket }}",
                        "instruction": "Pick the category and the priority.",
                        "format": "Answer with JSON only: category, priority and a one-line summary.",
                    }
                },
            },
            {
                "message": "Tickets mentioning a chargeback are urgent.",
                "variables": [
                    {
                        "name": "ticket",
                        "type": "string",
                        "description": "The ticket's subject and body.",
                    }
                ],
                "model": {
                    "provider": "local",
                    "model": "echo-1",
                    "parameters": {"temperature": 0, "seed": 7},
                    "response_schema": TRIAGE_SCHEMA,
                },
                "templates": {
                    "en": {
                        "system": "You triage customer support tickets.",
                        "context": "Ticket:\n{{ ticket }}",
                        "instruction": "Pick the category and the priority. A ticket that mentions a "
                        "chargeback or a lawyer is urgent.",
                        "format": "Answer with JSON only: category, priority and a one-line summary.",
                    }
                },
            },
        ],
    },
    {
        "key": "brand.voice",
        "snippet": True,
        "description": "How every customer-facing prompt sounds. Included, never run alone.",
        "default_locale": "en",
        "tags": ["snippet", "brand"],
        "versions": [
            {
                "message": "The brand voice, as marketing wrote it.",
                "variables": [],
                "model": {"provider": "local", "model": "echo-1"},
                "templates": {
                    "en": {"system": "You speak for Trailhead Outfitters: warm, plain words."},
                    "fr": {"system": "Vous parlez pour Trailhead Outfitters : chaleureux, simple."},
                },
            },
            {
                "message": "Shorter sentences; no exclamation marks.",
                "variables": [],
                "model": {"provider": "local", "model": "echo-1"},
                "templates": {
                    "en": {
                        "system": "You speak for Trailhead Outfitters: warm, plain, short "
                        "sentences, no exclamation marks."
                    },
                    "fr": {
                        "system": "Vous parlez pour Trailhead Outfitters : chaleureux, phrases "
                        "courtes, sans point d'exclamation."
                    },
                },
            },
        ],
    },
    {
        "key": "rules.safety",
        "snippet": True,
        "description": "What no prompt may ask a customer for. Included pinned.",
        "default_locale": "en",
        "tags": ["snippet", "safety"],
        "versions": [
            {
                "message": "The rules legal signed off.",
                "variables": [],
                "model": {"provider": "local", "model": "echo-1"},
                "templates": {
                    "en": {
                        "system": "Never ask for a card number or a password. Never promise a "
                        "refund that the refund_status tool does not show."
                    },
                    "fr": {"system": "Ne demandez jamais de numéro de carte ni de mot de passe."},
                },
            },
        ],
    },
    {
        "key": "support.agent",
        "description": "The help page's chat assistant: looks orders up, answers as JSON.",
        "default_locale": "en",
        "tags": ["support", "chat", "tools"],
        "versions": [
            _agent_version("First chat assistant.", "{{ question }}"),
            _agent_version(
                "Look the order up before answering about one.",
                "{{ question }}\n\nIf the customer names an order, call order_lookup first.",
            ),
        ],
    },
    {
        "key": "marketing.product-description",
        "description": "Writes a product page description from a feature list.",
        "default_locale": "en",
        "tags": ["marketing"],
        "versions": [
            {
                "message": "Product descriptions in English and German.",
                "variables": [
                    {"name": "product_name", "type": "string"},
                    {"name": "features", "type": "list", "description": "Bullet points."},
                    {"name": "tone", "type": "string", "required": False, "default": "friendly"},
                ],
                "model": {
                    "provider": "local",
                    "model": "echo-1",
                    "parameters": {"temperature": 0.8, "max_tokens": 300},
                },
                "templates": {
                    "en": {
                        "system": "You write product copy for an outdoor gear shop.",
                        "context": "Product: {{ product_name }}\nFeatures:\n"
                        "{% for f in features %}- {{ f }}\n{% endfor %}",
                        "instruction": "Write a {{ tone }} description of about 80 words.",
                    },
                    "de": {
                        "system": "Du schreibst Produkttexte für einen Outdoor-Shop.",
                        "context": "Produkt: {{ product_name }}\nMerkmale:\n"
                        "{% for f in features %}- {{ f }}\n{% endfor %}",
                        "instruction": "Schreibe eine Beschreibung von etwa 80 Wörtern, "
                        "Tonfall: {{ tone }}.",
                    },
                },
            },
            {
                "message": "Ask for a headline too.",
                "variables": [
                    {"name": "product_name", "type": "string"},
                    {"name": "features", "type": "list", "description": "Bullet points."},
                    {"name": "tone", "type": "string", "required": False, "default": "friendly"},
                ],
                "model": {
                    "provider": "local",
                    "model": "echo-1",
                    "parameters": {"temperature": 0.8, "max_tokens": 300},
                },
                "templates": {
                    "en": {
                        "system": "You write product copy for an outdoor gear shop.",
                        "context": "Product: {{ product_name }}\nFeatures:\n"
                        "{% for f in features %}- {{ f }}\n{% endfor %}",
                        "instruction": "Write a {{ tone }} headline and a description of about "
                        "80 words.",
                        "format": "Headline on the first line, then the description.",
                    },
                    "de": {
                        "system": "Du schreibst Produkttexte für einen Outdoor-Shop.",
                        "context": "Produkt: {{ product_name }}\nMerkmale:\n"
                        "{% for f in features %}- {{ f }}\n{% endfor %}",
                        "instruction": "Schreibe eine Überschrift und eine Beschreibung von etwa "
                        "80 Wörtern, Tonfall: {{ tone }}.",
                        "format": "Überschrift in der ersten Zeile, dann die Beschreibung.",
                    },
                },
            },
        ],
    },
    {
        "key": "engineering.code-review-summary",
        "description": "Summarizes a pull request's diff for reviewers.",
        "default_locale": "en",
        "tags": ["engineering", "internal"],
        "versions": [
            {
                "message": "Summaries with risk notes.",
                "variables": [
                    {"name": "diff", "type": "string", "description": "The unified diff."},
                    {"name": "max_items", "type": "integer", "required": False, "default": 5},
                ],
                "model": {
                    "provider": "local",
                    "model": "echo-1",
                    "parameters": {"temperature": 0.1, "max_tokens": 600},
                },
                "templates": {
                    "en": {
                        "system": "You are a senior engineer reviewing a pull request.",
                        "context": "```diff\n{{ diff }}\n```",
                        "instruction": "List at most {{ max_items }} changes a reviewer must look at, "
                        "riskiest first.",
                        "format": "A numbered list; one line each.",
                    }
                },
            },
        ],
    },
    {
        "key": "sales.meeting-recap",
        "description": "Turns a sales call transcript into a recap email.",
        "default_locale": "en",
        "tags": ["sales"],
        "versions": [
            {
                "message": "Recap with next steps.",
                "variables": [
                    {"name": "transcript", "type": "string"},
                    {"name": "attendees", "type": "list"},
                ],
                "model": {
                    "provider": "local",
                    "model": "echo-1",
                    "parameters": {"temperature": 0.4},
                },
                "templates": {
                    "en": {
                        "system": "You are an account executive's assistant.",
                        "context": "Attendees: {{ attendees | join(', ') }}\n\n{{ transcript }}",
                        "instruction": "Write the recap email: decisions, open questions, next steps "
                        "with owners.",
                    }
                },
            },
            {
                "draft": True,
                "message": "Work in progress: add a subject line.",
                "variables": [
                    {"name": "transcript", "type": "string"},
                    {"name": "attendees", "type": "list"},
                ],
                "model": {
                    "provider": "local",
                    "model": "echo-1",
                    "parameters": {"temperature": 0.4},
                },
                "templates": {
                    "en": {
                        "system": "You are an account executive's assistant.",
                        "context": "Attendees: {{ attendees | join(', ') }}\n\n{{ transcript }}",
                        "instruction": "Write the recap email: decisions, open questions, next steps "
                        "with owners.",
                        "format": "Start with 'Subject: ' and a subject line.",
                    }
                },
            },
        ],
    },
    {
        "key": "search.query-rewrite",
        "description": "Rewrites a shopper's search query for the product index.",
        "default_locale": "en",
        "tags": ["search"],
        "versions": [
            {
                "message": "Expand abbreviations, keep brand names.",
                "variables": [{"name": "query", "type": "string"}],
                "model": {
                    "provider": "local",
                    "model": "echo-small",
                    "parameters": {"temperature": 0, "max_tokens": 60, "stop": ["\n"]},
                },
                "templates": {
                    "en": {
                        "system": "You rewrite search queries for an outdoor gear catalogue.",
                        "instruction": "Rewrite: {{ query }}",
                        "format": "One line, no quotes.",
                    }
                },
            },
        ],
    },
    {
        "key": "support.faq",
        "description": "Answers a customer's question: guarded (injections refused, contact "
        "details kept from the model and the caller) and cached for ten minutes.",
        "default_locale": "en",
        "tags": ["support"],
        "versions": [
            {
                "message": "Guardrails and a response cache around the model call.",
                "variables": [
                    {
                        "name": "question",
                        "type": "string",
                        "description": "The customer's question, as they typed it.",
                    }
                ],
                "model": {
                    "provider": "local",
                    "model": "echo-1",
                    "parameters": {"temperature": 0},
                    "cache": {"exact": {"ttl_seconds": 600}},
                    "guardrails": {
                        "input": {
                            "max_tokens": {"limit": 2000, "action": "refuse"},
                            "injection": {"action": "refuse"},
                            "pii": {"action": "redact", "rules": ["email", "phone"]},
                        },
                        "output": {"pii": {"action": "redact"}},
                    },
                },
                "templates": {
                    "en": {
                        "system": "You answer customers' questions about orders, delivery and "
                        "returns.",
                        "instruction": "Question: {{ question }}",
                    }
                },
            },
        ],
    },
]


# --- evaluations ------------------------------------------------------------------------------

# The refund reply's golden set, as an author would import it (JSONL). The local model echoes the
# user message, so the expectations check what each version tells the customer: version 1 never
# says when the money arrives, version 2 does, version 3 also reminds of the refund window.
REFUND_GOLDEN_CASES = [
    {
        "key": "basic-eur",
        "variables": {"customer_name": "Ada", "order_id": "A-1001", "refund_amount": 42.5},
        "expectation": {"scorer": "contains", "values": ["A-1001", "42.5 EUR"]},
    },
    {
        "key": "arrival-time",
        "variables": {"customer_name": "Grace", "order_id": "A-1002", "refund_amount": 15},
        "expectation": {"scorer": "contains", "value": "5 business days"},
        "must_pass": True,
    },
    {
        "key": "names-the-customer",
        "variables": {"customer_name": "Linus", "order_id": "B-2001", "refund_amount": 99.99},
        "expectation": {"scorer": "contains", "value": "Linus"},
    },
    {
        "key": "amount-format",
        "variables": {"customer_name": "Barbara", "order_id": "B-2002", "refund_amount": 1200},
        "expectation": {"scorer": "regex", "pattern": "\\b1200 EUR\\b"},
    },
    {
        "key": "refund-window-default",
        "variables": {"customer_name": "Edsger", "order_id": "C-3001", "refund_amount": 8},
        "expectation": {"scorer": "contains", "value": "30 days to ask for a refund"},
    },
    {
        "key": "refund-window-custom",
        "variables": {
            "customer_name": "Frances",
            "order_id": "C-3002",
            "refund_amount": 64,
            "policy_days": 14,
        },
        "expectation": {"scorer": "contains", "value": "14 days to ask"},
    },
    {
        "key": "no-emoji",
        "variables": {"customer_name": "Ken", "order_id": "D-4001", "refund_amount": 23},
        "expectation": {"scorer": "regex", "pattern": "^[^\\U0001F300-\\U0001FAFF]*$"},
    },
    {
        "key": "small-amount",
        "variables": {"customer_name": "Dennis", "order_id": "D-4002", "refund_amount": 0.99},
        "expectation": {"scorer": "contains", "value": "0.99 EUR"},
    },
    {
        "key": "mentions-card",
        "variables": {"customer_name": "Margaret", "order_id": "E-5001", "refund_amount": 310},
        "expectation": {"scorer": "contains", "value": "reach the card"},
        "must_pass": True,
    },
    {
        "key": "similar-to-reviewed",
        "variables": {"customer_name": "Alan", "order_id": "E-5002", "refund_amount": 50},
        "expectation": {
            "scorer": "similarity",
            "value": "Order E-5002 was refunded: 50 EUR. Refunds reach the card within 5 "
            "business days. Tell Alan the refund is on its way and when to expect it.",
            "threshold": 0.6,
        },
    },
    {
        "key": "fr-delay",
        "variables": {"customer_name": "Zoé", "order_id": "F-6001", "refund_amount": 18},
        "expectation": {"scorer": "contains", "value": "5 jours ouvrés"},
        "locale": "fr",
    },
    {
        "key": "fr-order",
        "variables": {"customer_name": "Léa", "order_id": "F-6002", "refund_amount": 75},
        "expectation": {"scorer": "contains", "value": "F-6002"},
        "locale": "fr",
    },
    # Frozen: authors' runs never see these; gates do.
    {
        "key": "holdout-large-refund",
        "variables": {"customer_name": "Radia", "order_id": "H-9001", "refund_amount": 4999},
        "expectation": {"scorer": "contains", "values": ["H-9001", "5 business days"]},
        "holdout": True,
    },
    {
        "key": "holdout-window",
        "variables": {"customer_name": "Tim", "order_id": "H-9002", "refund_amount": 12},
        "expectation": {"scorer": "contains", "value": "days to ask for a refund"},
        "holdout": True,
    },
]

# prompt key -> [(dataset name, description, cases)]
# The agent's golden set: the local model answers a tool-enabled request with a call to the first
# tool, so the cases check what it calls (an answer of tool calls is scored as their JSON).
AGENT_GOLDEN_CASES = [
    {
        "key": "looks-the-order-up",
        "variables": {"customer_name": "Zoé", "question": "Where is my order A-17?"},
        "expectation": {
            "scorer": "json_field",
            "pointer": "/tool_calls/0/name",
            "value": "order_lookup",
        },
        "must_pass": True,
    },
    {
        "key": "passes-the-order-id",
        "variables": {"customer_name": "Ben", "question": "Order B-2 has not arrived"},
        "expectation": {"scorer": "contains", "value": "B-2"},
    },
    {
        "key": "after-a-conversation",
        "variables": {
            "customer_name": "Ana",
            "conversation": [
                {"role": "user", "content": "Hi, I ordered boots last week."},
                {"role": "assistant", "content": "Hello Ana, which order is it?"},
            ],
            "question": "It is C-9",
        },
        "expectation": {"scorer": "contains", "value": "C-9"},
    },
]

DATASETS: dict[str, list[tuple[str, str, list[dict[str, Any]]]]] = {
    "support.refund-reply": [
        ("golden", "Real refund replies the support leads reviewed.", REFUND_GOLDEN_CASES)
    ],
    "support.agent": [("golden", "Chats the support leads replayed.", AGENT_GOLDEN_CASES)],
}

# (environment, dataset name, minimum pass rate in percent): production takes a version only when
# its golden set passes, holdout included, with every must-pass case.
GATES: list[tuple[str, str, int]] = [("production", "golden", 90)]

# The refund reply's production canary is judged by numbers (docs/canary-analysis.md).
CANARY_POLICIES: dict[tuple[str, str], dict[str, Any]] = {
    ("support.refund-reply", "production"): {
        "steps": [10, 25, 50, 100],
        "min_minutes": 30,
        "min_calls": 200,
        "max_minutes": 24 * 60,
        "max_error_rate_increase": 1,
        "max_p95_latency_increase": 20,
    },
}

# Simulated traffic, so the A/B results page has something to show: reported outcomes (source
# "reported", request ids "demo-…") for subjects drawn through the real release, per variant a
# profile (error rate, latency median in ms, share of thumbs-up among those who gave feedback).
TRAFFIC: dict[str, dict[str, Any]] = {
    "support.ticket-triage": {
        "environment": "production",
        "subjects": 1200,
        "seed": 20261127,
        "profiles": {
            "control": {"error_rate": 0.03, "latency_ms": 820, "thumbs_up": 0.71},
            "chargeback": {"error_rate": 0.025, "latency_ms": 860, "thumbs_up": 0.78},
        },
    },
}
