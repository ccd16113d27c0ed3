"""The release verbs as the admin offers them: for each, its inputs form and the
``ReleaseChange`` of ``releases.services`` it builds from them.

The table (``VERBS``) names one change class per verb; the confirmation view
(``views.change_page``) is the same for all of them: parse the inputs, build the change and
preview it (``ReleaseChange.preview``: the service's own rules, with a placeholder salt), and on
POST execute that change with the revision the page showed (STYLE R2: parse -> call one service
-> present).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin import site as default_site
from django.contrib.admin.widgets import AutocompleteSelect

from registry.actors import Actor
from registry.models import Prompt, PromptVersion
from registry.selectors import version_list
from releases.models import ChangeRequest, Environment, Release, ReleaseEvent
from releases.services import (
    CanaryAbort,
    CanaryPercent,
    CanaryPromote,
    CanaryStart,
    Deploy,
    ExperimentStart,
    ExperimentStop,
    ReleaseChange,
    Rollback,
    ShadowStart,
    ShadowStop,
)
from releases.services.change_requests import change_request_propose
from releases.state import ReleaseState, release_state

RAMP_STEPS = (5, 25, 50, 100)  # the quick buttons: the usual canary ramp


@dataclass(frozen=True, slots=True)
class Slot:
    """One prompt in one environment, released there or not yet (``release`` is None)."""

    prompt: Prompt
    environment: Environment
    release: Release | None

    @property
    def state(self) -> ReleaseState:
        return release_state(self.release) if self.release is not None else ReleaseState()

    @property
    def revision(self) -> int:
        # A first change creates the release at revision 0, so 0 is what "never released" read.
        return self.release.revision if self.release is not None else 0


@dataclass(frozen=True, slots=True)
class Preview:
    """What a confirmation page shows, and the change it applies on "yes"."""

    state: ReleaseState
    change: ReleaseChange
    undoes: ReleaseEvent | None = None  # rollback: the change whose ``before`` is restored


# --- inputs -----------------------------------------------------------------------------------


def version_input(**kwargs: Any) -> forms.IntegerField:
    # A number, not a choice: the suggestions come from a <datalist>, and a draft or a missing
    # number reaches the service, which says why it cannot be released.
    return forms.IntegerField(
        min_value=1, widget=forms.NumberInput(attrs={"list": "release-versions"}), **kwargs
    )


def percent_input(**kwargs: Any) -> forms.DecimalField:
    # No range here: the service's percent rule (0–100, 0.01 steps) answers, in its own words.
    return forms.DecimalField(widget=forms.NumberInput(attrs={"step": "any"}), **kwargs)


class Inputs(forms.Form):
    """A verb's inputs; some need the release as it is (the experiment's variants)."""

    def __init__(self, data: Any = None, *, slot: Slot | None, initial: Any = None) -> None:
        super().__init__(data, initial=initial)
        self.slot = slot

    def complete(self) -> bool:
        """Whether the data names every required input: a page opened from a link that gives
        only some (the board's "Deploy a prompt" gives the environment) is a form to fill in,
        not a form with errors."""
        return all(name in self.data for name, field in self.fields.items() if field.required)


class NoInputs(Inputs):
    pass


class DeployInputs(Inputs):
    version = version_input(help_text="The committed version everyone gets.")


class PromptDeployInputs(Inputs):
    """The board's "Deploy a prompt": any prompt, released in the environment or not yet."""

    prompt = forms.ModelChoiceField(
        queryset=Prompt.objects.all(),
        # Only the chosen option is rendered: the page costs the same with 10 or 10,000 prompts.
        widget=AutocompleteSelect(Release._meta.get_field("prompt"), default_site),
    )
    environment = forms.ModelChoiceField(
        queryset=Environment.objects.order_by("position"), to_field_name="name"
    )
    version = version_input(help_text="The committed version everyone gets.")


class CanaryStartInputs(Inputs):
    version = version_input(help_text="The version the canary sends subjects to.")
    percent = percent_input(help_text="Share of subjects that get it, 0–100.")


class CanaryPercentInputs(Inputs):
    percent = percent_input(help_text="The canary's new share of subjects, 0–100.")


VARIANT_LINE = re.compile(r"(?P<name>\S+)\s+v?(?P<version>\d+)\s+(?P<percent>[\d.]+)\s*%?")


class ExperimentStartInputs(Inputs):
    name = forms.CharField(max_length=100, help_text="What the experiment tests, e.g. tone-v2.")
    variants = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 40, "class": "vLargeTextField"}),
        help_text="One variant a line: name, version, percent (“control 7 50”). The rest of the "
        "subjects stay on stable.",
    )
    planned_calls = forms.IntegerField(
        required=False,
        min_value=1,
        label="Planned sample",
        help_text="Sticky calls over all variants to collect before the final analysis (at least "
        "30 a variant). The A/B results correct earlier looks against it; empty: nothing is "
        "called significant before the experiment stops.",
    )

    def clean_variants(self) -> list[tuple[str, int, Decimal]]:
        parsed, wrong = [], []
        lines = [line.strip() for line in self.cleaned_data["variants"].splitlines()]
        for number, line in enumerate((line for line in lines if line), start=1):
            match = VARIANT_LINE.fullmatch(line)
            if match is None:
                wrong.append(number)
                continue
            parsed.append((match["name"], int(match["version"]), Decimal(match["percent"])))
        if wrong:
            raise forms.ValidationError(
                f"Write each variant as “name version percent” (line {', '.join(map(str, wrong))})."
            )
        return parsed


class ExperimentStopInputs(Inputs):
    winner = forms.ChoiceField(
        required=False, help_text="Its version becomes stable; with no winner, stable stays."
    )

    def clean_winner(self) -> str | None:
        return self.cleaned_data["winner"] or None

    def __init__(self, data: Any = None, *, slot: Slot | None, initial: Any = None) -> None:
        super().__init__(data, slot=slot, initial=initial)
        experiment = slot.state.experiment if slot is not None else None
        variants = experiment.variants if experiment is not None else ()
        self.fields["winner"].choices = [
            ("", "No winner: everyone back to the stable version"),
            *((v.name, f"{v.name} (version {v.version})") for v in variants),
        ]


class ShadowStartInputs(Inputs):
    versions = forms.CharField(help_text="Version numbers, separated by commas: “9, 10”.")
    sample_percent = percent_input(help_text="Share of calls that also run them, 0–100.")
    # No range here either: the service's budget rule answers (1–100,000, or empty).
    budget_per_hour = forms.IntegerField(
        required=False, label="Budget per hour", widget=forms.NumberInput(attrs={"min": 1})
    )

    def __init__(self, data: Any = None, *, slot: Slot | None, initial: Any = None) -> None:
        super().__init__(data, slot=slot, initial=initial)
        # Read now, not at import: the setting is the server's and may differ per deployment.
        self.fields["budget_per_hour"].help_text = (
            "Shadow runs per hour at most; empty: the server default "
            f"({settings.SHADOW_BUDGET_PER_HOUR}). Changing only the budget of running shadows "
            "keeps the same calls sampled."
        )

    def clean_versions(self) -> list[int]:
        parts = [p.strip().removeprefix("v") for p in self.cleaned_data["versions"].split(",")]
        if not all(p.isdigit() for p in parts if p):
            raise forms.ValidationError("Give version numbers separated by commas.")
        return [int(p) for p in parts if p]


class RollbackInputs(Inputs):
    # Empty: the default target (the last change not rolled back yet); a number: the event the
    # timeline's "Roll back to before this" chose.
    to_event = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)


class ConfirmForm(forms.Form):
    """What every change carries besides its inputs: why, and the revision the page showed.

    With ``can_override`` (a gated verb, a user with ``releases.override_gates``) it also takes
    "release anyway"; without, the field does not exist, so a forged value never reaches the
    service."""

    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60, "class": "vLargeTextField"}),
        help_text="Why: it goes into the prompt's release history with your name.",
    )
    revision = forms.IntegerField(min_value=0, widget=forms.HiddenInput)

    def __init__(
        self, *args: Any, reason_required: bool = True, can_override: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["reason"].required = reason_required
        if can_override:
            self.fields["override_gates"] = forms.BooleanField(
                required=False,
                label="Release anyway (override the failed gates)",
                help_text="The reason above is kept in the release history with every gate "
                "you override.",
            )

    def service_options(self) -> dict[str, Any]:
        """What the service takes beyond the reason and revision: the override, if offered."""
        if "override_gates" not in self.fields:
            return {}
        return {"override_gates": self.cleaned_data.get("override_gates", False)}


# --- the verbs --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verb:
    """A release change as the admin offers it: the ``ReleaseChange`` it builds from its inputs
    (each input the change takes, by name), and the page around it."""

    name: str  # URL name suffix, and the event action's value where they match
    change: type[ReleaseChange]
    title: str
    submit: str
    permission: str  # "deploy" or "rollback": ModelAdmin.has_<permission>_permission()
    inputs: type[Inputs]
    # The way back (rollback, abort) never waits for someone to type a reason (DESIGN.md,
    # failure rules); every other change says why.
    reason_required: bool = True

    @property
    def action(self) -> str:
        return self.change.action

    @property
    def gated(self) -> bool:
        """Puts a version in front of traffic, so the promotion gates are consulted (and may be
        overridden by a release manager with ``releases.override_gates``)."""
        return self.change.gated

    def initial(self, slot: Slot | None) -> dict[str, Any]:
        return initial_inputs(self.name, slot)

    def preview(self, slot: Slot, data: dict[str, Any]) -> Preview:
        """The change the inputs name, checked, and the state it would leave: what the page
        shows before anything is applied (a domain error says why it cannot apply)."""
        names = {f.name for f in fields(self.change)}
        change = self.change(**{name: value for name, value in data.items() if name in names})
        change.check(reason="")  # the reason is the confirm form's; an override comes on apply
        decision = change.preview(slot.release, slot.state)
        return Preview(decision.target, change.confirmed(decision), undoes=decision.restores)

    def proposes(self, slot: Slot | None) -> bool:
        """Whether "yes" proposes the change as a change request instead of applying it: a held
        change in an environment that requires review (decision 0048)."""
        return slot is not None and slot.environment.requires_review and self.change.held

    def propose(
        self,
        slot: Slot,
        preview: Preview,
        *,
        actor: Actor,
        reason: str,
        expected_revision: int,
        **options: Any,
    ) -> ChangeRequest:
        """The previewed change as a change request, against the revision the page showed."""
        return change_request_propose(
            prompt=slot.prompt,
            environment=slot.environment,
            change=replace(preview.change, **options),
            actor=actor,
            reason=reason,
            expected_revision=expected_revision,
        )

    def apply(
        self,
        slot: Slot,
        preview: Preview,
        *,
        actor: Actor,
        reason: str,
        expected_revision: int,
        **options: Any,
    ) -> Release:
        """The previewed change, with the confirm form's options (``override_gates``), under the
        revision the page showed."""
        return replace(preview.change, **options).execute(
            prompt=slot.prompt,
            environment=slot.environment,
            actor=actor,
            reason=reason,
            expected_revision=expected_revision,
        )


VERBS: dict[str, Verb] = {
    verb.name: verb
    for verb in [
        Verb(
            name="deploy",
            change=Deploy,
            title="Deploy a version",
            submit="Deploy",
            permission="deploy",
            inputs=DeployInputs,
        ),
        Verb(
            name="canary_start",
            change=CanaryStart,
            title="Start a canary",
            submit="Start the canary",
            permission="deploy",
            inputs=CanaryStartInputs,
        ),
        Verb(
            name="canary_percent",
            change=CanaryPercent,
            title="Ramp the canary",
            submit="Set the percent",
            permission="deploy",
            inputs=CanaryPercentInputs,
        ),
        Verb(
            name="canary_promote",
            change=CanaryPromote,
            title="Promote the canary",
            submit="Promote",
            permission="deploy",
            inputs=NoInputs,
        ),
        Verb(
            name="canary_abort",
            change=CanaryAbort,
            title="Abort the canary",
            submit="Abort the canary",
            permission="deploy",
            inputs=NoInputs,
            reason_required=False,
        ),
        Verb(
            name="experiment_start",
            change=ExperimentStart,
            title="Start an experiment",
            submit="Start the experiment",
            permission="deploy",
            inputs=ExperimentStartInputs,
        ),
        Verb(
            name="experiment_stop",
            change=ExperimentStop,
            title="Stop the experiment",
            submit="Stop the experiment",
            permission="deploy",
            inputs=ExperimentStopInputs,
        ),
        Verb(
            name="shadow_start",
            change=ShadowStart,
            title="Start shadows",
            submit="Start the shadows",
            permission="deploy",
            inputs=ShadowStartInputs,
        ),
        Verb(
            name="shadow_stop",
            change=ShadowStop,
            title="Stop shadows",
            submit="Stop the shadows",
            permission="deploy",
            inputs=NoInputs,
        ),
        Verb(
            name="rollback",
            change=Rollback,
            title="Roll back",
            submit="Roll back",
            permission="rollback",
            inputs=RollbackInputs,
            reason_required=False,
        ),
    ]
}
# The board's "Deploy a prompt": the deploy verb, for a prompt and environment chosen on the page.
DEPLOY_A_PROMPT = Verb(
    name="deploy_prompt",
    change=Deploy,
    title="Deploy a prompt",
    submit="Deploy",
    permission="deploy",
    inputs=PromptDeployInputs,
)


# --- defaults ---------------------------------------------------------------------------------


def recent_versions(prompt: Prompt, limit: int = 20) -> list[PromptVersion]:
    """The latest committed versions, newest first: the version inputs' suggestions."""
    committed = version_list(prompt=prompt).filter(status=PromptVersion.Status.COMMITTED)
    return list(committed.only("number", "message", "prompt_id")[:limit])


def initial_inputs(verb: str, slot: Slot | None) -> dict[str, Any]:
    """What a verb's page proposes before the user types anything, so the first view of the page
    already shows a target: the newest version not stable yet, 5 % to start, the next ramp step."""
    if slot is None:
        return {}
    state = slot.state
    newest = next(
        (v.number for v in recent_versions(slot.prompt, limit=5) if v.number != state.stable),
        None,
    )
    match verb:
        case "deploy" | "deploy_prompt":
            return {"version": newest} if newest else {}
        case "canary_start":
            return {"version": newest, "percent": RAMP_STEPS[0]} if newest else {}
        case "canary_percent" if state.canary is not None:
            current = state.canary.weight / 100
            step = next((s for s in RAMP_STEPS if s > current), RAMP_STEPS[-1])
            return {"percent": step}
        case "experiment_start" if state.stable is not None and newest:
            return {"variants": f"control {state.stable} 50\ncandidate {newest} 50"}
        case "shadow_start" if state.shadow is not None:
            # Running shadows: the page changes them, starting from what runs.
            shadow = state.shadow
            return {
                "versions": ", ".join(map(str, shadow.versions)),
                "sample_percent": Decimal(shadow.sample).scaleb(-2),
                **(
                    {"budget_per_hour": shadow.budget_per_hour}
                    if shadow.budget_per_hour is not None
                    else {}
                ),
            }
        case "shadow_start" if newest:
            return {"versions": str(newest), "sample_percent": 10}
    return {}
