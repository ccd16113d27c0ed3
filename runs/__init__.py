"""Running prompts on model providers; imports registry and releases, never evaluations or api."""
