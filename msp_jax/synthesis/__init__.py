"""Synthetic data: plan attribute combinations, sample from the mixed prompts, parse, denoise, export, and
measure the generated set (diversity, parse rate, attribute agreement, perplexity)."""
