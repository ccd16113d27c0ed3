"""``manage.py demo``: loads the demo prompts (once) and makes sure an admin login exists.

The demo's bindings name the ``local`` provider, and a binding must name a configured provider, so
the command configures ``local`` at the fake provider's default address when it is missing (``make
run`` configures it first, at its own port, and that one is kept).

Idempotent: prompts that exist are left alone, so ``make run`` can call it every time. The admin's
password is generated on first use and kept in ``var/admin-password.txt`` (mode 0600) so it stays
the same between runs, even on a fresh database; the command prints it. An ``admin`` user whose
password was set some other way keeps it.
"""

from __future__ import annotations

import json
import math
import random
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from api.demo_data import CANARY_POLICIES, DATASETS, GATES, PROMPTS, RELEASES, TRAFFIC
from api.demo_login import ADMIN_USERNAME, kept_password, password_path
from evaluations.canary.services import canary_analysis_attach
from evaluations.datasets.services import dataset_create, dataset_import
from evaluations.gates.services import promotion_gate_create
from evaluations.models import PromotionGate
from registry.actors import Actor
from registry.content import VersionContent
from registry.models import Prompt
from registry.services import prompt_create, version_create
from releases import services as releases
from releases.models import Environment
from releases.resolution import resolve
from releases.selectors import environment_get, served_releases
from runs.events import events_ingest
from runs.models import ModelPrice, Provider
from runs.services import model_price_set, provider_save

RELEASE_STEPS = {
    "deploy": releases.release_deploy,
    "canary_start": releases.release_canary_start,
    "canary_percent": releases.release_canary_set_percent,
    "experiment_start": releases.release_experiment_start,
    "shadow_start": releases.release_shadow_start,
}

# The registry setting up its own demo: a system actor, so production's review (below) does not
# hold the loader's own releases.
DEMO_ACTOR = Actor.system("demo")
REVIEW_GROUP = "Release reviewers"
REVIEWER_USERNAME = "reviewer"
REVIEWED_ENVIRONMENT = "production"
ADMIN_URL = "http://127.0.0.1:8000/admin/"  # where ``make run`` serves it by default
LOCAL_PROVIDER = "local"  # what every demo binding names
LOCAL_PROVIDER_URL = "http://127.0.0.1:8765/v1"  # python -m runs.fake_provider's default port
DEMO_PRICES = {"echo-1": ("0.50", "1.50"), "echo-small": ("0.15", "0.60")}  # per million tokens


class Command(BaseCommand):
    help = "Load the demo prompts and their releases, and ensure an admin login (printed)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--admin-url", default=ADMIN_URL, help="Where the admin is served.")

    def handle(self, *args, **options) -> None:
        if not Provider.objects.filter(name=LOCAL_PROVIDER).exists():
            if not settings.PROVIDER_ALLOW_LOOPBACK:
                # The outbound policy (runs.egress) refuses loopback providers in production.
                raise CommandError(
                    f"The demo's provider runs on loopback ({LOCAL_PROVIDER_URL}); load the demo "
                    "with PROVIDER_ALLOW_LOOPBACK=true (DEBUG=true, as make run has, turns it on)."
                )
            provider_save(name=LOCAL_PROVIDER, base_url=LOCAL_PROVIDER_URL, timeout_seconds=10.0)
            self.stdout.write(f"Provider {LOCAL_PROVIDER}: added at {LOCAL_PROVIDER_URL}.")
        # Example prices, so the demo's calls and shadow reports show costs; a price already set
        # (in the admin or with `provider price`) is left alone.
        for model, (given, taken) in DEMO_PRICES.items():
            if not ModelPrice.objects.filter(provider__name=LOCAL_PROVIDER, model=model).exists():
                model_price_set(
                    provider=LOCAL_PROVIDER,
                    model=model,
                    input_per_million=Decimal(given),
                    output_per_million=Decimal(taken),
                )
        created = 0
        for spec in PROMPTS:
            if Prompt.objects.filter(key=spec["key"]).exists():
                continue
            self._load(spec)
            created += 1
        self.stdout.write(
            f"Demo prompts: {created} loaded, {len(PROMPTS) - created} already there."
        )
        for environment, dataset, min_pass_rate in GATES:
            if not PromotionGate.objects.filter(
                environment__name=environment, dataset_name=dataset, prompt=None
            ).exists():
                promotion_gate_create(
                    environment=environment_get(name=environment),
                    dataset_name=dataset,
                    min_pass_rate=min_pass_rate,
                    actor=DEMO_ACTOR,
                )
        reviewer_password = self._ensure_review()
        password = self._ensure_admin()
        if password is None:
            self.stdout.write(
                f"Admin: {options['admin_url']}  user {ADMIN_USERNAME} has a password of its own "
                f"(manage.py changepassword {ADMIN_USERNAME} resets it)."
            )
        else:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Admin: {options['admin_url']}  user {ADMIN_USERNAME}  password {password}"
                )
            )
        if reviewer_password is not None:
            self.stdout.write(
                f"Reviewer ({REVIEWED_ENVIRONMENT} requires review): user {REVIEWER_USERNAME}  "
                f"password {reviewer_password}"
            )

    @transaction.atomic
    def _load(self, spec: dict) -> None:
        prompt = prompt_create(
            key=spec["key"],
            actor=DEMO_ACTOR,
            description=spec["description"],
            default_locale=spec["default_locale"],
            tags=spec["tags"],
            is_snippet=spec.get("snippet", False),
        )
        for version in spec["versions"]:
            version_create(
                prompt=prompt,
                actor=DEMO_ACTOR,
                message=version["message"],
                content=VersionContent.from_dict(version),
                commit=not version.get("draft", False),
            )
        for step, environment, arguments in RELEASES.get(spec["key"], []):
            RELEASE_STEPS[step](
                prompt=prompt,
                environment=environment_get(name=environment),
                actor=DEMO_ACTOR,
                **arguments,
            )
        for name, description, cases in DATASETS.get(spec["key"], []):
            dataset = dataset_create(
                prompt=prompt, name=name, description=description, actor=DEMO_ACTOR
            )
            lines = "\n".join(json.dumps(case, ensure_ascii=False) for case in cases)
            dataset_import(dataset=dataset, content=lines, format="jsonl", actor=DEMO_ACTOR)
        for (key, environment), policy in CANARY_POLICIES.items():
            if key == spec["key"]:
                canary_analysis_attach(
                    prompt=prompt,
                    environment=environment_get(name=environment),
                    policy=policy,
                    actor=DEMO_ACTOR,
                    reason="Judge the canary by numbers from here on.",
                )
        if spec["key"] in TRAFFIC:
            transaction.on_commit(lambda: _simulate_traffic(spec["key"], TRAFFIC[spec["key"]]))

    def _ensure_review(self) -> str | None:
        """Production requires review by "Release reviewers" (decision 0048), with a second
        login to review what the admin proposes: ``reviewer``, a release manager in that group,
        whose password is kept in ``VAR_DIR/reviewer-password.txt`` as the admin's is. An
        environment whose review someone set up otherwise, or a reviewer whose password was
        changed, is left as it is; None then."""
        group, _ = Group.objects.get_or_create(name=REVIEW_GROUP)
        production = Environment.objects.filter(name=REVIEWED_ENVIRONMENT).first()
        if production is not None and production.review_group_id is None:
            production.requires_review, production.review_group = True, group
            production.save(update_fields=["requires_review", "review_group"])
        password = kept_password(settings.VAR_DIR / "reviewer-password.txt")
        User = get_user_model()
        user = User.objects.filter(username=REVIEWER_USERNAME).first()
        if user is None:
            user = User.objects.create_user(
                REVIEWER_USERNAME, "reviewer@example.com", password, is_staff=True
            )
            user.groups.add(group, *Group.objects.filter(name="Release managers"))
            return password
        return password if user.check_password(password) else None

    def _ensure_admin(self) -> str | None:
        """The admin login's password, or None when ``admin`` has a password of its own.

        1. Take the password kept in ``VAR_DIR/admin-password.txt``, or write a new one there.
        2. No ``admin`` user: create the superuser with it.
        3. An ``admin`` whose password is another one keeps it: someone set it (``createsuperuser``,
           ``changepassword``), and ``make run`` must not take their login away.
        """
        password = kept_password(password_path())
        User = get_user_model()
        user = User.objects.filter(username=ADMIN_USERNAME).first()
        if user is None:
            User.objects.create_superuser(ADMIN_USERNAME, "admin@example.com", password)
            return password
        return password if user.check_password(password) else None


def _simulate_traffic(key: str, traffic: dict) -> None:
    """Reports one call per simulated subject, through the release as it serves them: each
    subject lands on the variant its bucket gives, so the split is the real one."""
    release = served_releases(environment=traffic["environment"], prompt=key)[0]
    rng = random.Random(traffic["seed"])
    events = []
    for number in range(traffic["subjects"]):
        subject = f"demo-customer-{number}"
        resolution = resolve(release, subject=subject, locale=None)
        profile = traffic["profiles"].get(resolution.assignment.label)
        if profile is None:
            continue
        failed = rng.random() < profile["error_rate"]
        feedback = None
        if not failed and rng.random() < 0.4:
            feedback = 1.0 if rng.random() < profile["thumbs_up"] else -1.0
        events.append(
            {
                "event_id": f"demo-{key}-{number}",
                "request_id": f"demo-{number}",
                "prompt": key,
                "version": resolution.version.number,
                "environment": traffic["environment"],
                "variant": resolution.assignment.label,
                "subject": subject,
                "release_revision": release.revision,
                "status": "error" if failed else "ok",
                "error_class": "APITimeoutError" if failed else None,
                "provider": "local",
                "model": "echo-1",
                "latency_ms": round(rng.lognormvariate(math.log(profile["latency_ms"]), 0.35), 1),
                "input_tokens": rng.randint(60, 140),
                "output_tokens": 0 if failed else rng.randint(20, 60),
                "schema_valid": None if failed else rng.random() > 0.01,
                "feedback": feedback,
            }
        )
    for start in range(0, len(events), 1000):
        events_ingest(events=events[start : start + 1000])
