"""A refusal in OpenAI's error shape, so the openai client raises its typed exceptions.

The refusal is the one the rest of the API sends as a problem document (``api.problems``), with
the same status: ``{"error": {"message", "type", "param", "code"}}``, where

- ``message`` is the problem's detail, followed by each problem it lists;
- ``type`` is OpenAI's family of the status (``invalid_request_error``, ``authentication_error``,
  ``permission_error``, ``rate_limit_error``, ``server_error``);
- ``param`` is where the first listed problem points, as OpenAI spells a member
  (``variables.customer_name``, ``messages[2].role``), or null;
- ``code`` is the problem type's name in snake case (``not_released``, ``invalid_variables``).

The problem document itself rides beside it as ``problem`` (the client leaves it in the raw
body), with everything a problem carries: the listed errors, a 502's attempts, the scope needed.
Its headers go along (``Retry-After``, ``WWW-Authenticate``), with the request id, which the
client reads as ``request_id``, and ``X-Should-Retry: false`` on a 502: the registry has tried
every model the binding names already, and a retry of the client's would pay them again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from config.logs import REQUEST_ID_HEADER
from config.logs import request_id as current_request_id

from .. import problems
from ..problems import ProblemAnswer

# OpenAI's error families by status; any other 4xx is a request OpenAI would call invalid.
ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}
SERVER_ERROR = "server_error"
INVALID_REQUEST = "invalid_request_error"
MAX_LISTED = 5  # problems spelled out in the message; the problem document lists them all


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, SERVER_ERROR if status >= 500 else INVALID_REQUEST)


def param_of(pointer: str) -> str | None:
    """A JSON Pointer as OpenAI names a member: ``/messages/2/role`` -> ``messages[2].role``."""
    if not pointer:
        return None
    spelled = ""
    for token in pointer.lstrip("/").split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        spelled += f"[{token}]" if token.isdigit() else f".{token}"
    return spelled.lstrip(".")


def openai_error_body(answer: ProblemAnswer, *, instance: str) -> dict[str, object]:
    problem = answer.body(instance)
    listed = [e for e in problem.get("errors", ()) if isinstance(e, Mapping)]
    message = answer.detail
    details = [str(e.get("detail", "")) for e in listed[:MAX_LISTED] if e.get("detail")]
    if details and details != [message]:
        message = f"{message} {' '.join(details)}"
    if len(listed) > MAX_LISTED:
        message += f" (and {len(listed) - MAX_LISTED} more: see problem.errors)"
    return {
        "error": {
            "message": message,
            "type": error_type(answer.problem.status),
            "param": param_of(str(listed[0].get("pointer", ""))) if listed else None,
            "code": answer.problem.slug.replace("-", "_"),
        },
        "problem": problem,
    }


def openai_refusal(
    *, rebase: Mapping[str, str] | None = None
) -> Callable[[ProblemAnswer, HttpRequest], HttpResponse]:
    """How the endpoints send a refusal (``api.fastpath.runtime_view``'s ``refusal``).
    ``rebase`` maps the pointer a rule of the run path uses to the member the request sent it in
    (``/variables`` -> ``/prompt/variables`` for the Responses endpoint)."""
    moves = sorted((rebase or {}).items(), key=lambda item: -len(item[0]))

    def moved(pointer: object) -> object:
        if not isinstance(pointer, str):
            return pointer
        for old, new in moves:
            if re.match(re.escape(old) + r"(/|$)", pointer):
                return new + pointer[len(old) :]
        return pointer

    def refuse(answer: ProblemAnswer, request: HttpRequest) -> HttpResponse:
        if moves and "errors" in answer.extra:
            errors = [
                {**e, "pointer": moved(e.get("pointer"))} if isinstance(e, Mapping) else e
                for e in answer.extra["errors"]
            ]
            answer = ProblemAnswer(
                answer.problem, answer.detail, {**answer.extra, "errors": errors}, answer.headers
            )
        return openai_error_response(answer, request)

    return refuse


def openai_error_response(answer: ProblemAnswer, request: HttpRequest) -> JsonResponse:
    response = JsonResponse(
        openai_error_body(answer, instance=request.path), status=answer.problem.status
    )
    for name, value in answer.headers.items():
        response[name] = value
    response[REQUEST_ID_HEADER] = current_request_id()
    if answer.problem is problems.PROVIDER_UNAVAILABLE:
        response["X-Should-Retry"] = "false"
    return response


@csrf_exempt
def not_found_view(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any other address under the prefix (``/models``, a typo): OpenAI's 404, not a page."""
    detail = (
        f"There is nothing at {request.path}: this server answers chat/completions and "
        "responses for registry prompts."
    )
    return openai_error_response(ProblemAnswer(problems.NOT_FOUND, detail), request)
