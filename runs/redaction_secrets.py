"""Redaction rules for secrets and addresses, and the operator's own rules (``runs.redaction``).

- ``secret``: the value of a ``name: value`` / ``name=value`` pair whose name is a secret's
  (``password: hunter2``, ``secret=abc``, ``"api_key": "…"``, ``Authorization: Basic …``), and in
  JSON-like values every value under such a key (``secret_name``), whatever its type.
- ``ip``: IPv4 addresses (four octets up to 255, not part of a longer dotted number) and IPv6
  addresses (anything ``ipaddress`` accepts, with at least two colons and a hex digit).
- AWS-style secret access keys (40 characters of base64 holding a ``/`` or ``+``) for the
  ``api_key`` rule, told from paths by how often they switch between upper case, lower case and
  digits: random keys switch at least 10 times in 40 characters (all but about 1 in 100,000),
  paths and CamelCase names far less.
- Custom rules: ``RUNS_REDACTION_CUSTOM_RULES`` maps a name to a regex; a match becomes
  ``[name]``. Checked at start-up (``custom_rule_problems``): the name is new and lowercase, the
  regex compiles, passes the shared ReDoS check (``registry.regexes``) with no unbounded
  backtracking quantifier at all (redaction searches whole inputs of up to a MiB, where even one,
  ``a.*b`` over ``aaaa…``, is quadratic), matches no empty text and no placeholder.

Every built-in pattern is linear: possessive bodies or fixed lengths behind a lookbehind, the
decisions made in Python on the candidate. Pure module: no models, only the settings.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Collection, Mapping
from itertools import pairwise
from typing import Any

from django.conf import settings

from registry.regexes import MAX_REGEX_CHARS, search_regex_problem

from .redaction_scan import Span, glued, scan

SECRET = "[secret]"
IP = "[ip]"
# A placeholder left by any rule: never redacted again, so redaction settles.
PLACEHOLDER = re.compile(r"\[[a-z][a-z0-9_]*\]")
CUSTOM_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")

# --- names of secrets -----------------------------------------------------------------------------

# The last word of a name: "db_password", "accessToken", "Authorization", "x-api-key".
_SECRET_LAST_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "token",
        "apikey",
        "authorization",
        "auth",
        "credential",
        "credentials",
        "cookie",
    }
)
_SECRET_LAST_PAIRS = frozenset(
    {("api", "key"), ("private", "key"), ("secret", "key"), ("access", "key"), ("client", "secret")}
)
# Anywhere in the name: "password_confirmation", "secret_answer".
_SECRET_ANY_WORDS = frozenset({"password", "passwd", "passphrase", "secret"})
_NAME_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")


def secret_name(name: str) -> bool:
    """Whether a field called ``name`` holds a secret. By words, so ``max_tokens``,
    ``token_count`` and ``author`` are not secrets while ``accessToken`` and ``X-Api-Key`` are."""
    if len(name) > 100:
        return False
    words = [word.lower() for word in _NAME_WORDS.findall(name)]
    if not words:
        return False
    if words[-1] in _SECRET_LAST_WORDS or tuple(words[-2:]) in _SECRET_LAST_PAIRS:
        return True
    return any(word in _SECRET_ANY_WORDS for word in words)


# --- name: value pairs in text ----------------------------------------------------------------

_PAIR = re.compile(
    r"(?<![\w-])(?P<name>[A-Za-z][\w.-]{0,63}+)(?P<quote>[\"']?+)[ \t]*+[:=][ \t]*+"
    r"(?:(?P<open>[\"'])(?P<quoted>[^\"'\n]{1,512}+)[\"']|(?P<bare>[^\s,;&\"']{1,512}+))"
)
_SCHEME_TOKEN = re.compile(r"[ \t]++(?P<token>[^\s,;&\"']{1,512}+)")
_AUTH_SCHEMES = frozenset({"basic", "bearer", "digest", "token", "negotiate", "apikey"})


def _pair(text: str, match: re.Match[str]) -> tuple[list[Span], int]:
    if not secret_name(match.group("name")):
        # Resume inside the value: "note=password: x" holds a pair after the first one's '='.
        return [], match.start("quoted" if match.group("quoted") else "bare")
    group = "quoted" if match.group("quoted") else "bare"
    start, end = match.span(group)
    if group == "bare" and match.group(group).lower() in _AUTH_SCHEMES:
        # "Authorization: Basic dXNlcjpw…": the scheme is no secret, its credentials are (and a
        # lone word is the secret itself: "password: token").
        token = _SCHEME_TOKEN.match(text, end)
        if token is not None:
            start, end = token.span("token")
    while group == "bare" and end > start and text[end - 1] == ".":  # the sentence's end
        end -= 1
    if end == start or PLACEHOLDER.fullmatch(text[start:end]):
        return [], max(end, match.start() + 1)
    return [Span(start, end, SECRET)], end


def redact_secret_pairs(text: str) -> str:
    return scan(text, _PAIR, _pair)


# --- IP addresses -----------------------------------------------------------------------------

_IPV4 = re.compile(r"(?<![\w.])[0-9]{1,3}+(?:\.[0-9]{1,3}+){3}")
_IPV6 = re.compile(r"(?<![\w:.%])[0-9A-Fa-f:][0-9A-Fa-f:.]{2,44}+")


def _ipv4(text: str, match: re.Match[str]) -> tuple[list[Span], int]:
    end = match.end()
    # "1.2.3.4.5" or "10.0.0.1a" is something else; "at 10.0.0.1." ends a sentence.
    if glued(text, end) or (end + 1 < len(text) and text[end] == "." and text[end + 1].isdigit()):
        return [], end
    if any(int(octet) > 255 for octet in match.group().split(".")):
        return [], end
    return [Span(match.start(), end, IP)], end


def _ipv6(text: str, match: re.Match[str]) -> tuple[list[Span], int]:
    candidate = match.group()
    end = match.end()
    if candidate.count(":") < 2 or glued(text, end):
        return [], end
    for trimmed in (candidate, candidate.rstrip(".")):
        if not any(char in "0123456789abcdefABCDEF" for char in trimmed):
            continue
        try:
            ipaddress.IPv6Address(trimmed)
        except ValueError:
            continue
        return [Span(match.start(), match.start() + len(trimmed), IP)], end
    return [], end


def redact_ips(text: str) -> str:
    return scan(scan(text, _IPV6, _ipv6), _IPV4, _ipv4)


# --- AWS-style secret access keys -------------------------------------------------------------

# "=" may end a key (base64 padding) but may come before one ("secret_key=…").
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+_-])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=_-])")
MIN_CLASS_SWITCHES = 10


def _char_class(char: str) -> str:
    return "upper" if char.isupper() else "lower" if char.islower() else "digit"


def _aws_secret(text: str, match: re.Match[str]) -> tuple[list[Span], int]:
    token = match.group()
    if "/" not in token and "+" not in token:
        return [], match.end()  # without them, the api_key rule's long-token check judges it
    switches = sum(
        _char_class(a) != _char_class(b)
        for a, b in pairwise(token)
        if a not in "/+" and b not in "/+"
    )
    if switches < MIN_CLASS_SWITCHES:
        return [], match.end()
    return [Span(match.start(), match.end(), placeholder_for("api_key"))], match.end()


def redact_aws_secrets(text: str) -> str:
    return scan(text, _AWS_SECRET, _aws_secret)


def placeholder_for(name: str) -> str:
    return f"[{name}]"


# --- JSON-like values under secret names ------------------------------------------------------


def secret_value(value: Any) -> Any:
    """What a value under a secret's name becomes: ``"[secret]"``, except an absent one (None,
    an empty string or container), which says nothing and stays as it was."""
    if value is None or value in ("", [], {}) or PLACEHOLDER.fullmatch(str(value)):
        return value
    return SECRET


# --- custom rules -------------------------------------------------------------------------------


def custom_rule_problems(rules: object, *, reserved: Collection[str]) -> list[str]:
    """Every problem with a ``RUNS_REDACTION_CUSTOM_RULES`` value, as sentences (none: usable)."""
    if not isinstance(rules, Mapping):
        return ["RUNS_REDACTION_CUSTOM_RULES must map rule names to regular expressions."]
    problems = []
    for name, pattern in rules.items():
        if not isinstance(name, str) or not CUSTOM_NAME.fullmatch(name):
            problems.append(f"Custom redaction rule name {name!r}: use [a-z][a-z0-9_]{{0,31}}.")
            continue
        if name in reserved:
            problems.append(f"Custom redaction rule {name!r} takes the name of a built-in rule.")
            continue
        if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_REGEX_CHARS:
            problems.append(
                f"Custom redaction rule {name!r}: a regex of 1 to {MAX_REGEX_CHARS} characters."
            )
            continue
        _code, detail = search_regex_problem(pattern)
        if detail:
            problems.append(f"Custom redaction rule {name!r}: {detail}")
            continue
        compiled = re.compile(pattern)
        if compiled.fullmatch(""):
            problems.append(f"Custom redaction rule {name!r} matches the empty text.")
        elif any(
            compiled.search(placeholder_for(other)) for other in (*reserved, "secret", *rules)
        ):
            problems.append(
                f"Custom redaction rule {name!r} matches a placeholder such as [{name}]: "
                "redacted text would be redacted again."
            )
    return problems


def custom_rules(*, reserved: Collection[str]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """The custom rules in force, compiled; ``ValueError`` for a setting the check refuses (never
    a rule skipped: a typo would store what it should have redacted)."""
    rules = settings.RUNS_REDACTION_CUSTOM_RULES
    if not rules:
        return ()
    if not isinstance(rules, Mapping) or not all(
        isinstance(name, str) and isinstance(pattern, str) for name, pattern in rules.items()
    ):
        raise ValueError(" ".join(custom_rule_problems(rules, reserved=reserved)))
    return _checked(tuple(rules.items()), tuple(reserved))


@functools.lru_cache(maxsize=8)
def _checked(
    items: tuple[tuple[str, str], ...], reserved: tuple[str, ...]
) -> tuple[tuple[str, re.Pattern[str]], ...]:
    # Cached by the setting's value, so each call costs a dict lookup; a changed setting (a test's
    # override) is checked afresh. Errors are raised, never cached.
    problems = custom_rule_problems(dict(items), reserved=reserved)
    if problems:
        raise ValueError(" ".join(problems))
    return tuple((name, re.compile(pattern)) for name, pattern in items)


def redact_custom(text: str, rules: tuple[tuple[str, re.Pattern[str]], ...]) -> str:
    for name, pattern in rules:
        text = pattern.sub(placeholder_for(name), text)
    return text
