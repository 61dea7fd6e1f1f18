"""A prompt's length as the pipeline sees it: chat-templated, tokenized, cut at MAX_CAPTION_TOKENS.

Read from the model directory's `tokenizer/` (tokenizer.json and the chat template) with the
`tokenizers` library and jinja2, so the control plane can check limits without torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

# ZImagePipeline.encode_prompt's max_sequence_length: tokens past it are cut off before the text encoder.
MAX_CAPTION_TOKENS = 512


class CaptionTokens:
    def __init__(self, tokenizer_dir: Path) -> None:
        self.tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        self.tokenizer.no_padding()  # the file may pad or cut to the pipeline's length: count the whole text
        self.tokenizer.no_truncation()
        template_file = tokenizer_dir / "chat_template.jinja"
        if template_file.exists():
            source = template_file.read_text()
        else:
            source = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())["chat_template"]
        # As transformers renders chat templates (apply_chat_template).
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self.template = env.from_string(source)

    def templated(self, prompt: str) -> str:
        """The text the pipeline encodes for `prompt` (ZImagePipeline._encode_prompt)."""
        return self.template.render(messages=[{"role": "user", "content": prompt}], add_generation_prompt=True,
                                    enable_thinking=True)

    def count(self, prompt: str) -> int:
        return len(self.tokenizer.encode(self.templated(prompt)).ids)
