"""Fixture data for the benchmarks: N prompts of V versions, each released in production.

    python bench/seed.py PROMPTS VERSIONS [LOCALES]   (LOCALES: 2, English and French, or 3)

Bulk inserts, not services: this is scale data for a benchmark, built in seconds. Every version is
committed and has English and French templates and two variables, like a real prompt.
"""

from __future__ import annotations

import os
import sys

import django

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from django.db import transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from registry.content import VersionContent  # noqa: E402
from registry.models import LocalizedTemplate, Prompt, PromptVersion, Variable  # noqa: E402
from releases.models import Environment, Release  # noqa: E402

TEMPLATES = {
    "en": {
        "system": "You are a courteous support agent for an online shop.",
        "context": "Order {{ order_id }} was refunded. Refunds reach the card within 5 business days.",
        "instruction": "Tell {{ customer_name }} the refund is on its way and when to expect it.",
        "format": "Two short paragraphs. No emoji.",
    },
    "fr": {
        "system": "Tu es un agent du service client d'une boutique en ligne, toujours courtois.",
        "context": "La commande {{ order_id }} a été remboursée ; le remboursement arrive sous 5 jours.",
        "instruction": "Annonce à {{ customer_name }} que le remboursement est en route.",
        "format": "Deux paragraphes courts. Pas d'emoji.",
    },
}
# A third locale, for the benchmarks that ask for three (bench/nodes.py): German.
GERMAN = {
    "system": "Du bist ein freundlicher Kundendienstmitarbeiter eines Onlineshops.",
    "context": "Bestellung {{ order_id }} wurde erstattet; das Geld kommt in 5 Werktagen.",
    "instruction": "Sage {{ customer_name }}, dass die Erstattung unterwegs ist.",
    "format": "Zwei kurze Absätze. Keine Emojis.",
}
VARIABLES = [
    {
        "name": "customer_name",
        "type": "string",
        "required": True,
        "default": None,
        "description": "",
    },
    {"name": "order_id", "type": "string", "required": True, "default": None, "description": ""},
]
MODEL = {
    "provider": "local",
    "model": "echo-1",
    "parameters": {"temperature": 0.2},
    "response_schema": None,
    "fallbacks": [],
}


@transaction.atomic
def main(prompts: int, versions: int, locales: int = 2) -> None:
    now = timezone.now()
    templates = {**TEMPLATES, "de": GERMAN} if locales >= 3 else TEMPLATES
    content_hash = VersionContent.from_dict(
        {"variables": VARIABLES, "model": MODEL, "templates": templates}
    ).content_hash
    created = Prompt.objects.bulk_create(
        Prompt(
            key=f"bench.prompt-{i}", description="Benchmark prompt", default_locale="en", tags=[]
        )
        for i in range(prompts)
    )
    # The immutability triggers refuse rows under a committed version, and a prompt has one draft
    # at a time: so each round inserts every prompt's next version as a draft, its rows, then
    # commits the round.
    for number in range(1, versions + 1):
        drafts = PromptVersion.objects.bulk_create(
            PromptVersion(
                prompt=p,
                number=number,
                status="draft",
                message="bench",
                content_hash=content_hash,
                provider="local",
                model_name="echo-1",
                parameters=MODEL["parameters"],
                author_label="bench",
            )
            for p in created
        )
        Variable.objects.bulk_create(
            Variable(version=v, position=i, **spec)
            for v in drafts
            for i, spec in enumerate(VARIABLES)
        )
        LocalizedTemplate.objects.bulk_create(
            LocalizedTemplate(version=v, locale=locale, source_hash="bench", **sections)
            for v in drafts
            for locale, sections in templates.items()
        )
        PromptVersion.objects.filter(number=number, status="draft").update(
            status="committed", committed_at=now, committed_by_label="bench"
        )
    production = Environment.objects.get(name="production")
    latest = {v.prompt_id: v for v in PromptVersion.objects.filter(number=versions)}
    Release.objects.bulk_create(
        Release(prompt=p, environment=production, revision=1, stable_version=latest[p.pk])
        for p in created
    )


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:4]))
