"""Tokens and money: estimates where a provider reports no usage, and prices."""

from __future__ import annotations

import dataclasses
import math

from db.guides import Usage

#: Characters per token assumed by estimates (about right for English text and code with
#: OpenAI's tokenizers; an estimate is marked as such where it is stored).
CHARS_PER_TOKEN = 4


def estimate_tokens(chars: int) -> int:
    """Return the tokens ``chars`` characters of text are estimated to take (0 for none)."""
    return math.ceil(max(0, chars) / CHARS_PER_TOKEN)


def priced(usage: Usage, *, input_per_mtok: float, output_per_mtok: float) -> Usage:
    """Return ``usage`` with its cost: tokens times the prices of a million tokens.

    Parameters:
      usage: the tokens a guide took.
      input_per_mtok: price of a million prompt tokens (``AI_PRICE_INPUT_PER_MTOK``).
      output_per_mtok: price of a million completion tokens (``AI_PRICE_OUTPUT_PER_MTOK``).
    """
    cost = (usage.prompt_tokens * input_per_mtok + usage.completion_tokens * output_per_mtok) / 1e6
    return dataclasses.replace(usage, cost=cost)
