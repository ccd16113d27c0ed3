"""What the fake provider answers: pure functions of the request, no I/O (see runs.fake_provider).

The same request always gets a byte-identical answer. ``echo-1`` (and any unknown model) repeats
the first 32 words of the last user message, ``echo-small`` the first 8; a ``json_schema`` response
format gets a document valid against the schema; usage counts ceil(characters / 4) tokens a text.

Tools: a request with ``tools`` whose ``tool_choice`` is not ``none`` and whose last message is not
a ``tool`` result is answered with one tool call (``content`` null, finish reason ``tool_calls``):

1. to the tool ``tool_choice`` names, else to the first tool;
2. with ``arguments`` the JSON of ``sample_json(parameters)`` (the words of the last user message
   for strings), compact, keys in schema order;
3. with the id ``call_`` + the request's digest, so the same request gets the same call.

Once the last message is a tool result, it answers as without tools (echo, or the response
schema's sample). Streamed, the call comes as OpenAI sends it: a delta with its index, id, type
and name (arguments ""), then the arguments in pieces of ``TOOL_ARGUMENT_PIECE`` characters, then
the finish reason. The ``badtool`` fault calls a tool nobody declared, with arguments that are
not JSON.

Moderation, from a fixed list of words (``FLAGGED_WORDS``: whole words, case-insensitive), so a
test can write a text that is flagged and one that is not:

- ``moderations_body`` answers OpenAI's ``POST /v1/moderations``: one result per input, each
  category flagged when one of its words is in the text, with a score that grows with the count;
- a ``guard-`` model (``guard-1``) answers a chat as Llama Guard does: ``safe``, or ``unsafe``
  and a line of the hazard codes (``S1,S9``) the words of its last user message fall under.

========================  =============================  ================
word                      OpenAI category                Llama Guard code
========================  =============================  ================
kill, murder              violence                       S1
counterfeit               illicit                        S2
bomb                      illicit/violent                S9
vermin                    hate                           S10
suicide                   self-harm                      S11
========================  =============================  ================
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

CREATED = 1_700_000_000  # fixed, so the whole answer, not only its text, repeats
MAX_DEPTH = 16  # a recursive $ref stops here instead of recursing forever
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
JSON_FORMATS = ("json_object", "json_schema")
TOOL_ARGUMENT_PIECE = 8  # characters of a tool call's arguments per streamed chunk
STRING_FORMATS = {"date-time": "2024-01-01T00:00:00Z", "date": "2024-01-01", "email": "a@b.example"}


class ApiError(Exception):
    """An OpenAI-style error answer: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}
        self.body = {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _bad(param: str, message: str, code: str = "invalid_type") -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    response_format: dict[str, Any]  # {} when the request has none
    max_tokens: int | None
    digest: str  # of the whole body: the answer's id, so equal requests get equal answers
    tools: tuple[dict[str, Any], ...] = ()  # checked: each {"type": "function", "function": {…}}
    tool_choice: Any = None


def _is_content(content: Any) -> bool:
    if isinstance(content, str):
        return True
    return isinstance(content, list) and all(
        isinstance(part, dict)
        and isinstance(part.get("type"), str)
        and (part["type"] != "text" or isinstance(part.get("text"), str))
        for part in content
    )


def parse_chat_request(body: Any) -> ChatRequest:
    """Check the shape OpenAI checks, so a client bug fails here as it would there (400)."""
    if not isinstance(body, dict):
        raise _bad("body", "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "You must provide a model parameter.", "missing_required_parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "'messages' must be a non-empty array of {role, content}.")
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            message_ = f"Invalid 'messages[{i}].role': expected one of {', '.join(sorted(ROLES))}."
            raise _bad(f"messages[{i}].role", message_, "invalid_value")
        # An assistant turn that only calls tools has no content; every other turn needs one.
        content = message.get("content")
        if not (_is_content(content) or (role == "assistant" and content is None)):
            message_ = f"Invalid 'messages[{i}].content': expected a string or content parts."
            raise _bad(f"messages[{i}].content", message_)
    stream, options = body.get("stream", False), body.get("stream_options")
    if not isinstance(stream, bool):
        raise _bad("stream", "Invalid 'stream': expected a boolean.")
    if options is not None and not (stream and isinstance(options, dict)):
        message_ = "'stream_options' must be an object, allowed only when 'stream' is true."
        raise _bad("stream_options", message_, "invalid_value")
    fmt = body.get("response_format") or {}
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    schema_missing = kind == "json_schema" and not isinstance(fmt.get("json_schema"), dict)
    if fmt and (kind not in ("text", *JSON_FORMATS) or schema_missing):
        message_ = (
            "Invalid 'response_format': text, json_object, or json_schema with a 'json_schema'."
        )
        raise _bad("response_format", message_, "invalid_value")
    tools = body.get("tools")
    if tools is not None:
        valid = isinstance(tools, list) and all(
            isinstance(t, dict)
            and t.get("type") == "function"
            and isinstance(t.get("function"), dict)
            and isinstance(t["function"].get("name"), str)
            for t in tools
        )
        if not valid:
            message_ = "Invalid 'tools': expected an array of {type: function, function: {name}}."
            raise _bad("tools", message_)
    choice = body.get("tool_choice")
    if choice is not None and not tools:
        message_ = "'tool_choice' is only allowed when 'tools' are specified."
        raise _bad("tool_choice", message_, "invalid_value")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None and (type(limit) is not int or limit < 1):
        raise _bad("max_tokens", "'max_tokens' must be a positive integer.", "invalid_value")
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=bool(options and options.get("include_usage")),
        response_format=fmt,
        max_tokens=limit,
        digest=hashlib.sha256(canonical.encode()).hexdigest()[:24],
        tools=tuple(tools or ()),
        tool_choice=choice,
    )


def count_tokens(text: str) -> int:
    # ~4 characters a token: deterministic, and close enough for cost caps and usage records.
    return math.ceil(len(text) / 4)


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "\n".join(part["text"] for part in content if part["type"] == "text")
    return content if isinstance(content, str) else ""


def sample_json(schema: Any, *, text: str, root: Any = None, depth: int = 0) -> Any:
    """A deterministic document valid against ``schema`` (the subset structured outputs use).

    1. Resolve a local ``$ref`` (``#/$defs/...``) against the root schema.
    2. ``const`` wins, then the first ``enum`` value, then the first ``anyOf``/``oneOf`` branch.
    3. Otherwise go by ``type`` (the first non-null one of a list; inferred when absent): objects
       get their required properties (all of them when none is listed), arrays ``minItems`` items
       (at least one), strings ``text`` (or a fixed value for a known ``format``) fitted to
       ``minLength``/``maxLength``, numbers their lower bound (else 0 or below), booleans true.

    ``pattern``, ``multipleOf``, ``uniqueItems``, ``allOf`` and ``not`` are not honoured.
    """
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return None

    def sub(child: Any) -> Any:
        return sample_json(child, text=text, root=root, depth=depth + 1)

    if isinstance(ref := schema.get("$ref"), str) and ref.startswith("#"):
        target: Any = root
        for part in filter(None, ref[1:].split("/")):
            key = part.replace("~1", "/").replace("~0", "~")  # JSON pointer escapes
            target = target.get(key) if isinstance(target, dict) else None
        return sub(target)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if branches := schema.get("anyOf") or schema.get("oneOf"):
        return sub(branches[0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties") or {}
        names = schema.get("required", list(properties))
        return {name: sub(properties.get(name, {})) for name in names}
    if kind == "array":
        count = int(min(max(1, schema.get("minItems", 1)), schema.get("maxItems", math.inf)))
        return [sub(schema.get("items", {})) for _ in range(count)]
    if kind == "string":
        value = STRING_FORMATS.get(schema.get("format") or "", text)
        return value.ljust(schema.get("minLength", 0), "x")[: schema.get("maxLength")]
    if kind in ("integer", "number"):
        if "minimum" in schema:
            return math.ceil(schema["minimum"])
        if "exclusiveMinimum" in schema:
            return math.floor(schema["exclusiveMinimum"]) + 1
        return min(
            0,
            math.floor(schema.get("maximum", 0)),
            math.ceil(schema.get("exclusiveMaximum", 1)) - 1,
        )
    return True if kind == "boolean" else None


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


@dataclass(frozen=True, slots=True)
class Completion:
    content: str
    finish_reason: str
    usage: dict[str, int]
    tool_calls: tuple[ToolCall, ...] = ()


def tool_to_call(request: ChatRequest) -> dict[str, Any] | None:
    """The tool this request is answered with a call to (see the module's docstring), or None."""
    if not request.tools or request.tool_choice == "none":
        return None
    if request.messages[-1].get("role") == "tool":
        return None
    choice = request.tool_choice
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        return next((t for t in request.tools if t["function"]["name"] == name), None)
    return request.tools[0]


def complete(
    request: ChatRequest, *, break_json: bool = False, break_tool: bool = False
) -> Completion:
    """The answer, a pure function of the request.

    1. Take the first words of the last user message (of the last message if no user spoke).
    2. Answer ``"<model>: <words>"``, or for a JSON response format a JSON document: a sample of
       the ``json_schema`` schema, else ``{"answer": ...}``; a ``guard-`` model answers its
       verdict on that whole message instead (``guard_verdict``).
    3. For the ``badjson`` fault, wrap that JSON in prose and cut its last character: what repair
       code meets in the wild.
    4. Cut at ``max_tokens`` (finish reason ``length``) and count the usage.
    """
    users = [message for message in request.messages if message["role"] == "user"]
    last = message_text((users or request.messages)[-1])
    words = last.split()
    limit = 8 if request.model == "echo-small" else 32
    head = " ".join(words[:limit]) + (" ..." if len(words) > limit else "")
    echo = f"{request.model}: {head}"
    prompt = sum(count_tokens(message_text(message)) for message in request.messages)
    tool = tool_to_call(request)
    if tool is not None:
        name = tool["function"]["name"]
        arguments = json.dumps(
            sample_json(tool["function"].get("parameters") or {"type": "object"}, text=head),
            ensure_ascii=False,
            separators=(",", ":"),
        )
        if break_tool:  # a tool nobody declared, its arguments cut short: not JSON
            name, arguments = f"{name}_undeclared", arguments[:-1]
        call = ToolCall(f"call_{request.digest}", name, arguments)
        answer = count_tokens(name + arguments)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": answer,
            "total_tokens": prompt + answer,
        }
        return Completion("", "tool_calls", usage, (call,))
    kind = request.response_format.get("type")
    schema = request.response_format["json_schema"].get("schema") if kind == "json_schema" else None
    if request.model.startswith(GUARD_PREFIX) and kind not in JSON_FORMATS:
        content = guard_verdict(last)
    elif isinstance(schema, dict):
        content = json.dumps(sample_json(schema, text=head or "example"), ensure_ascii=False)
    else:
        content = json.dumps({"answer": echo}, ensure_ascii=False) if kind in JSON_FORMATS else echo
    if break_json:
        document = content if kind in JSON_FORMATS else json.dumps({"answer": echo})
        content = f"Sure! Here is the JSON you asked for:\n{document[:-1]}"
    finish_reason = "stop"
    if request.max_tokens is not None and count_tokens(content) > request.max_tokens:
        content, finish_reason = content[: request.max_tokens * 4], "length"
    answer = count_tokens(content)
    usage = {"prompt_tokens": prompt, "completion_tokens": answer, "total_tokens": prompt + answer}
    return Completion(content, finish_reason, usage)


def _tool_calls_json(completion: Completion) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in completion.tool_calls
    ]


def completion_body(request: ChatRequest, completion: Completion) -> dict[str, Any]:
    """A ``chat.completion`` object, field for field as OpenAI answers it."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": completion.content,
        "refusal": None,
    }
    if completion.tool_calls:  # as OpenAI answers a call: no content
        message["content"] = None
        message["tool_calls"] = _tool_calls_json(completion)
    choice = {"index": 0, "message": message, "logprobs": None}
    return {
        **_envelope(request, "chat.completion"),
        "choices": [{**choice, "finish_reason": completion.finish_reason}],
        "usage": completion.usage,
    }


def stream_chunks(request: ChatRequest, completion: Completion) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` events of a streamed answer, in OpenAI's order.

    1. The role, with empty content.
    2. The content, one word (with the spaces after it) per chunk: joined, they are the content;
       or each tool call: its index, id, type and name, then its arguments in pieces.
    3. An empty delta carrying the finish reason.
    4. With ``include_usage``, a chunk with no choices and the usage (earlier chunks: ``null``).
    """
    base = _envelope(request, "chat.completion.chunk")
    if request.include_usage:
        base["usage"] = None

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**base, "choices": [choice]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": piece}) for piece in re.findall(r"\S+\s*|\s+", completion.content)]
    for index, call in enumerate(completion.tool_calls):
        head = {"index": index, "id": call.id, "type": "function"}
        chunks.append(
            chunk({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]})
        )
        chunks += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            for piece in _pieces(call.arguments, TOOL_ARGUMENT_PIECE)
        ]
    chunks.append(chunk({}, completion.finish_reason))
    if request.include_usage:
        chunks.append({**base, "choices": [], "usage": completion.usage})
    return chunks


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _envelope(request: ChatRequest, kind: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{request.digest}",
        "object": kind,
        "created": CREATED,
        "model": request.model,
        "system_fingerprint": "fp_fake",
    }


EMBEDDING_DIMENSIONS = 256
WORD = re.compile(r"\w+")


def embed_text(text: str) -> list[float]:
    """A deterministic embedding: a hashed bag of the text's lower-cased words, L2-normalised.

    Texts sharing most of their words are near (cosine close to 1), texts sharing none are
    orthogonal (or nearly: two words may share a bucket), which is what a semantic cache's tests
    need from a model. A text with no words is the zero vector (similar to nothing).
    """
    vector = [0.0] * EMBEDDING_DIMENSIONS
    for word in WORD.findall(text.lower()):
        digest = hashlib.sha256(word.encode("utf-8")).digest()
        vector[int.from_bytes(digest[:4], "big") % EMBEDDING_DIMENSIONS] += 1.0
    norm = math.sqrt(sum(value * value for value in vector))
    return [value / norm for value in vector] if norm else vector


def embeddings_body(body: Any) -> dict[str, Any]:
    """OpenAI's ``POST /v1/embeddings``: ``input`` a string or a list of strings, ``model``; the
    answer has one ``{"object": "embedding", "index", "embedding"}`` per input, and ``usage``."""
    if not isinstance(body, dict):
        raise _bad("body", "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "You must provide a model parameter.", "missing_required_parameter")
    given = body.get("input")
    texts = [given] if isinstance(given, str) else given
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise _bad("input", "'input' must be a string or a non-empty array of strings.")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise _bad("encoding_format", "'encoding_format' must be float or base64.", "invalid_value")
    tokens = sum(count_tokens(text) for text in texts)
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(embed_text(text), encoding)}
        for i, text in enumerate(texts)
    ]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    # base64 is what OpenAI sends (and its client asks for by default): little-endian float32.
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


# -- moderation -----------------------------------------------------------------------------------

# Every category OpenAI's omni-moderation answers, in its order: each result lists them all.
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
# The words that flag a text (the module's docstring has the table): the category, and the code
# of Llama Guard 3's hazard taxonomy that a guard model answers for it.
FLAGGED_WORDS: dict[str, tuple[str, str]] = {
    "kill": ("violence", "S1"),
    "murder": ("violence", "S1"),
    "counterfeit": ("illicit", "S2"),
    "bomb": ("illicit/violent", "S9"),
    "vermin": ("hate", "S10"),
    "suicide": ("self-harm", "S11"),
}
GUARD_PREFIX = "guard-"


def flagged_words(text: str) -> dict[str, int]:
    """How many of ``FLAGGED_WORDS`` the text holds, by category (none: ``{}``)."""
    found: dict[str, int] = {}
    for word in WORD.findall(text.lower()):
        if word in FLAGGED_WORDS:
            category = FLAGGED_WORDS[word][0]
            found[category] = found.get(category, 0) + 1
    return found


def guard_verdict(text: str) -> str:
    """What a Llama Guard model answers for ``text``: ``safe``, or ``unsafe`` and on the next
    line the hazard codes found, comma-separated, in the taxonomy's order."""
    codes = {FLAGGED_WORDS[w][1] for w in WORD.findall(text.lower()) if w in FLAGGED_WORDS}
    if not codes:
        return "safe"
    return "unsafe\n" + ",".join(sorted(codes, key=lambda code: int(code[1:])))


def moderation_result(text: str, *, image: bool = False) -> dict[str, Any]:
    """One ``results`` item: every category flagged or not, its score (``1 - 0.5 ** (n + 1)`` for
    ``n`` words found: 0.75, 0.875…; 0 when none) and the input types it was applied to."""
    found = flagged_words(text)
    types = ["text", "image"] if image else ["text"]
    return {
        "flagged": bool(found),
        "categories": {c: c in found for c in MODERATION_CATEGORIES},
        "category_scores": {
            c: 1 - 0.5 ** (found[c] + 1) if c in found else 0.0 for c in MODERATION_CATEGORIES
        },
        "category_applied_input_types": {c: types for c in MODERATION_CATEGORIES},
    }


def _moderation_inputs(given: Any) -> list[tuple[str, bool]] | None:
    """The texts to moderate, each with whether it came with an image: a string, a list of
    strings (one result each), or a list of ``text``/``image_url`` parts (one input, one result,
    its texts joined). None when ``input`` is none of these."""
    if isinstance(given, str):
        return [(given, False)]
    if not isinstance(given, list) or not given:
        return None
    if all(isinstance(item, str) for item in given):
        return [(item, False) for item in given]
    texts, image = [], False
    for part in given:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and isinstance(part.get("image_url"), dict):
            image = True  # not looked at: only text is moderated here
        else:
            return None
    return [("\n".join(texts), image)]


def moderations_body(body: Any) -> dict[str, Any]:
    """OpenAI's ``POST /v1/moderations``: ``input`` (see ``_moderation_inputs``) and an optional
    ``model`` (default ``omni-moderation-latest``); the answer is ``{id, model, results}``, the id
    a digest of the request, so the same request gets the same bytes."""
    if not isinstance(body, dict):
        raise _bad("body", "The request body must be a JSON object.")
    model = body.get("model", "omni-moderation-latest")
    if not isinstance(model, str) or not model:
        raise _bad("model", "'model' must be a non-empty string.")
    inputs = _moderation_inputs(body.get("input"))
    if inputs is None:
        raise _bad(
            "input",
            "'input' must be a string, a non-empty array of strings, or an array of text and "
            "image_url parts.",
        )
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {
        "id": "modr-" + hashlib.sha256(canonical.encode()).hexdigest()[:24],
        "model": model,
        "results": [moderation_result(text, image=image) for text, image in inputs],
    }
