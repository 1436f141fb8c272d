"""The prompt bank: versioned prompt-set files, their validation and expansion into records."""

from t2ibias.prompts.types import PromptRecord, PromptSet
from t2ibias.prompts.bank import expand, load_prompt_set, prompt_sets

__all__ = ["PromptRecord", "PromptSet", "expand", "load_prompt_set", "prompt_sets"]
