"""The one place where a document becomes a prompt and a summary becomes a completion.

SFT, preference pairs, the reward model, RL rollouts and evaluation all format text here, so the
policy is trained, rewarded and evaluated on exactly the same prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sumrl.config import Config


@dataclass(frozen=True)
class PromptFormat:
    tokenizer: object
    instruction: str
    use_chat_template: bool = True

    @classmethod
    def from_params(cls, tokenizer, params: Config | Mapping) -> PromptFormat:
        prompt = Config.of(params).prompt
        return cls(tokenizer, prompt.instruction, prompt.use_chat_template)

    @property
    def chat(self) -> bool:
        return self.use_chat_template and bool(getattr(self.tokenizer, "chat_template", None))

    def prompt(self, document: str) -> str:
        """The text the policy continues. With a chat template: one user turn plus the assistant header."""
        user = f"{self.instruction}\n\n{document.strip()}" if self.instruction else document.strip()
        if self.chat:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
            )
        return f"{user}\n\nSummary:"

    def completion_lengths(self, summaries: list[str]) -> list[int]:
        """Tokens of each summary as a completion, EOS included: how a generated summary's length is counted."""
        ids = self.tokenizer([s.strip() for s in summaries], add_special_tokens=False)["input_ids"]
        return [len(x) + 1 for x in ids]

    def completion(self, summary: str) -> str:
        """A target completion: the summary closed by EOS, so the policy learns to stop."""
        body = summary.strip() if self.chat else " " + summary.strip()
        return body + self.tokenizer.eos_token
