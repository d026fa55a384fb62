"""sumrl: reproducible RLHF for summarization (SFT -> reward model -> RL -> reports)."""

__version__ = "0.1.0"
