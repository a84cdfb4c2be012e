"""The method: soft prompts per attribute, the mixers that combine them, the model inputs (template, exemplars,
padding) and prompt tuning against the frozen backbone (step, loop, checkpoints)."""
