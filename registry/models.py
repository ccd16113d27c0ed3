"""Prompts, their versions and what a version holds.

A ``PromptVersion`` is a draft until committed, then immutable: the service refuses a change, the
admin shows it read-only, the API answers 409, and the database refuses it too (the triggers in
migration 0002). Its content (variables, model binding, localized templates) is stored in rows so
the admin can edit a draft with inlines; ``registry.content.VersionContent`` is the same content as
a value.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

from .variables import VariableType

# ``\Z``, not ``$``: ``$`` also matches before a final newline (RegexValidator searches).
PROMPT_KEY_PATTERN = r"^[a-z0-9](?:[a-z0-9_-]|\.(?=[a-z0-9]))*\Z"
PROMPT_KEY_MAX = 150


class Prompt(models.Model):
    """A prompt, known to services by its stable ``key`` (``support.refund-reply``)."""

    key = models.CharField(
        max_length=PROMPT_KEY_MAX,
        unique=True,
        validators=[
            RegexValidator(
                PROMPT_KEY_PATTERN,
                "Use lowercase letters, digits, '-', '_' and single dots between parts.",
            )
        ],
        help_text="Stable name services ask for, e.g. support.refund-reply.",
    )
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_prompts",
    )
    default_locale = models.CharField(
        max_length=35,
        default="en",
        help_text="BCP 47 tag; every version needs a template in it, and it is the last fallback.",
    )
    tags = models.JSONField(default=list, blank=True)
    is_snippet = models.BooleanField(
        default=False,
        help_text='A shared block other prompts include with {{ snippet("key") }}; it declares '
        "no variables.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class PromptVersion(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        COMMITTED = "committed", "Committed"

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    message = models.TextField(blank=True, help_text="What changed and why, like a commit message.")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    # The SHA-256 of the canonical content (registry.content); kept current on drafts, frozen at commit.
    content_hash = models.CharField(max_length=64)

    # The model binding. Provider credentials come from the environment, never from here.
    provider = models.CharField(max_length=63)
    model_name = models.CharField(max_length=200)
    parameters = models.JSONField(default=dict, blank=True)
    response_schema = models.JSONField(null=True, blank=True)
    fallbacks = models.JSONField(default=list, blank=True)
    # Tools in OpenAI's format, and how the model may use them (registry.tools; decision 0033).
    tools = models.JSONField(default=list, blank=True)
    tool_choice = models.JSONField(null=True, blank=True)
    parallel_tool_calls = models.BooleanField(null=True, blank=True)
    # The response cache's policy, or null for none (registry.content.ModelBinding; decision 0050).
    cache = models.JSONField(null=True, blank=True)
    # The guardrail policy, or null for none (registry.guardrails; decision 0052).
    guardrails = models.JSONField(null=True, blank=True)

    # Who: the user when there is one, and always a label (an API key has no user).
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    author_label = models.CharField(max_length=150, blank=True)
    committed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    committed_by_label = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    committed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["prompt", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["prompt", "number"], name="version_unique_number"),
            # One draft per prompt: two authors never edit diverging drafts without knowing it, and
            # the draft's number is simply the next one.
            models.UniqueConstraint(
                fields=["prompt"], condition=Q(status="draft"), name="version_one_draft_per_prompt"
            ),
            models.CheckConstraint(condition=Q(number__gte=1), name="version_number_positive"),
            models.CheckConstraint(
                condition=Q(status="draft", committed_at__isnull=True)
                | Q(status="committed", committed_at__isnull=False),
                name="version_committed_has_time",
            ),
        ]
        permissions = [("commit_promptversion", "Can commit a draft version")]

    def __str__(self) -> str:
        return f"{self.prompt.key} v{self.number}"

    @property
    def is_committed(self) -> bool:
        return self.status == self.Status.COMMITTED

    @property
    def edit_tag(self) -> str:
        """What a writer sends back (``If-Match``) to prove it saw the latest draft.

        The content hash alone misses a message-only edit, so a draft's tag covers both; a
        committed version's tag is its content hash (nothing about it changes)."""
        if self.is_committed:
            return self.content_hash
        return hashlib.sha256(f"{self.content_hash}\n{self.message}".encode()).hexdigest()


class Variable(models.Model):
    """A variable a version declares; rendering refuses any other and checks types."""

    version = models.ForeignKey(PromptVersion, on_delete=models.CASCADE, related_name="variables")
    position = models.PositiveSmallIntegerField(default=0)
    name = models.CharField(max_length=64)
    type = models.CharField(
        max_length=10,
        choices=[(t.value, t.value) for t in VariableType],
        default=VariableType.STRING,
    )
    required = models.BooleanField(default=True)
    default = models.JSONField(null=True, blank=True)
    description = models.CharField(max_length=500, blank=True)
    # A ``messages`` variable's place: the section its history follows ("" for every other
    # type, and for a history that goes to the default place, after the context).
    after = models.CharField(max_length=16, blank=True, default="")

    class Meta:
        ordering = ["version", "position"]
        constraints = [
            models.UniqueConstraint(fields=["version", "name"], name="variable_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name


class LocalizedTemplate(models.Model):
    """A version's four sections in one locale."""

    version = models.ForeignKey(PromptVersion, on_delete=models.CASCADE, related_name="templates")
    locale = models.CharField(max_length=35, help_text="BCP 47 tag: en, fr, fr-CA, pt-BR…")
    system = models.TextField(blank=True)
    context = models.TextField(blank=True)
    instruction = models.TextField(blank=True)
    format = models.TextField(blank=True)
    # The hash of the default-locale sections this text was written against. When the default
    # locale's text changes and this translation does not, the hashes part: the translation is stale.
    source_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["version", "locale"]
        constraints = [
            models.UniqueConstraint(fields=["version", "locale"], name="template_unique_locale"),
        ]

    def __str__(self) -> str:
        return self.locale


class SnippetUse(models.Model):
    """A version's include of a snippet (``{{ snippet("brand.voice") }}``), one row per snippet
    and pinned version, written with the draft's templates (``registry.snippets``) and frozen
    with it at commit: what a snippet's page lists, and what refuses unmarking a used snippet.

    ``version`` None: the include follows the snippet's stable release in the environment served.
    """

    version = models.ForeignKey(
        PromptVersion, on_delete=models.CASCADE, related_name="snippet_uses"
    )
    # PROTECT: a snippet that versions include cannot be deleted from under them.
    snippet = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="uses")
    pinned = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["version", "snippet", "pinned"]
        constraints = [
            models.UniqueConstraint(
                fields=["version", "snippet"],
                condition=Q(pinned__isnull=True),
                name="snippet_use_unique_following",
            ),
            models.UniqueConstraint(
                fields=["version", "snippet", "pinned"],
                condition=Q(pinned__isnull=False),
                name="snippet_use_unique_pinned",
            ),
        ]

    def __str__(self) -> str:
        pinned = f" v{self.pinned}" if self.pinned is not None else ""
        return f"{self.version} includes {self.snippet.key}{pinned}"
