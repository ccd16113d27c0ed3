"""The OpenAI-compatible endpoints: a registry prompt run through OpenAI's own client.

``POST /{OPENAI_COMPAT_PREFIX}/chat/completions`` (``model: "prompt:<key>"``, the variables in
an extra ``variables`` member) and ``POST /{OPENAI_COMPAT_PREFIX}/responses`` (OpenAI's reusable
prompt, ``prompt: {id, version, variables}``) run the prompt on the run path, as ``POST
/api/v1/prompts/{key}/run`` does, and answer in OpenAI's shapes, their refusals in OpenAI's error
shape. A thin door (DESIGN.md, "new doors are thin"): what it decides is how the protocol maps,
never a rule of its own (docs/openai-compatible.md, decision 0042).

Modules:

- ``errors``: a refusal (``api.problems``) in OpenAI's error shape, and the prefix's 404;
- ``requests``: the two request shapes, read into the run they ask for;
- ``answers``: the run's outcome as OpenAI's objects and streamed events;
- ``views``: the two endpoints;
- ``schema``: their description in the OpenAPI schema;
- ``urls``: where they are mounted.
"""
