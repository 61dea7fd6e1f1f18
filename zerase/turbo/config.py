"""Z-Image Turbo's published configuration, and a small variant of it for CPU tests.

Sources (Hugging Face, Tongyi-MAI/Z-Image-Turbo, main): `model_index.json`, `transformer/config.json`,
`text_encoder/config.json` (Qwen3-4B's shape, as in Qwen/Qwen3-4B `config.json`), `vae/config.json`
(FLUX.1's autoencoder), `scheduler/scheduler_config.json`, `tokenizer/tokenizer_config.json`.

The small variant shrinks widths and depths only. It keeps every interface the core touches: the Qwen
vocabulary and tokenizer, 16 latent channels behind a real 8x VAE, 2x2 patches, the RoPE axes (so a
head is still 128 wide), and the scheduler.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

# model_index.json: the component classes ZImagePipeline.from_pretrained instantiates.
MODEL_INDEX: dict[str, tuple[str, str]] = {
    "scheduler": ("diffusers", "FlowMatchEulerDiscreteScheduler"),
    "text_encoder": ("transformers", "Qwen3Model"),
    "tokenizer": ("transformers", "Qwen2Tokenizer"),
    "transformer": ("diffusers", "ZImageTransformer2DModel"),
    "vae": ("diffusers", "AutoencoderKL"),
}

# transformer/config.json (ZImageTransformer2DModel's constructor arguments, all of them but the Omni
# variant's siglip_feat_dim, which Turbo's file does not set).
TRANSFORMER: dict[str, Any] = {
    "all_patch_size": [2],  # transformer/config.json
    "all_f_patch_size": [1],  # transformer/config.json
    "in_channels": 16,  # transformer/config.json: the VAE's latent channels
    "dim": 3840,  # transformer/config.json
    "n_layers": 30,  # transformer/config.json
    "n_refiner_layers": 2,  # transformer/config.json: noise and context refiners, 2 blocks each
    "n_heads": 30,  # transformer/config.json: 3840 / 30 = 128 = sum(axes_dims)
    "n_kv_heads": 30,  # transformer/config.json: no grouped-query attention
    "norm_eps": 1e-5,  # transformer/config.json
    "qk_norm": True,  # transformer/config.json
    "cap_feat_dim": 2560,  # transformer/config.json: the text encoder's hidden size
    "rope_theta": 256.0,  # transformer/config.json
    "t_scale": 1000.0,  # transformer/config.json
    "axes_dims": [32, 48, 48],  # transformer/config.json (diffusers' default agrees)
    "axes_lens": [1536, 512, 512],  # transformer/config.json (diffusers' default is [1024, 512, 512])
}

# text_encoder/config.json: Qwen3-4B as a Qwen3Model (the pipeline reads hidden_states[-2]).
TEXT_ENCODER: dict[str, Any] = {
    "architectures": ["Qwen3ForCausalLM"],  # text_encoder/config.json
    "hidden_size": 2560,  # text_encoder/config.json; Qwen/Qwen3-4B config.json
    "num_hidden_layers": 36,  # text_encoder/config.json; Qwen/Qwen3-4B
    "num_attention_heads": 32,  # text_encoder/config.json; Qwen/Qwen3-4B
    "num_key_value_heads": 8,  # text_encoder/config.json; Qwen/Qwen3-4B
    "head_dim": 128,  # text_encoder/config.json; Qwen/Qwen3-4B
    "intermediate_size": 9728,  # text_encoder/config.json; Qwen/Qwen3-4B
    "vocab_size": 151936,  # text_encoder/config.json; Qwen/Qwen3-4B (151,669 tokens, padded)
    "tie_word_embeddings": True,  # text_encoder/config.json; Qwen/Qwen3-4B
    "rms_norm_eps": 1e-6,  # text_encoder/config.json; Qwen/Qwen3-4B
    "rope_theta": 1000000,  # text_encoder/config.json; Qwen/Qwen3-4B (transformers 5: rope_parameters)
    "max_position_embeddings": 40960,  # text_encoder/config.json; Qwen/Qwen3-4B
    "hidden_act": "silu",  # text_encoder/config.json; Qwen/Qwen3-4B
    "attention_bias": False,  # text_encoder/config.json; Qwen/Qwen3-4B
    "use_sliding_window": False,  # text_encoder/config.json; Qwen/Qwen3-4B
    "max_window_layers": 36,  # text_encoder/config.json; Qwen/Qwen3-4B (unused without a sliding window)
    "bos_token_id": 151643,  # text_encoder/config.json; Qwen/Qwen3-4B: <|endoftext|>
    "eos_token_id": 151645,  # text_encoder/config.json; Qwen/Qwen3-4B: <|im_end|>
}

# vae/config.json: FLUX.1's AutoencoderKL (16 latent channels, 8x downscale, no quant convs).
VAE: dict[str, Any] = {
    "in_channels": 3,  # vae/config.json
    "out_channels": 3,  # vae/config.json
    "latent_channels": 16,  # vae/config.json
    "block_out_channels": [128, 256, 512, 512],  # vae/config.json
    "layers_per_block": 2,  # vae/config.json
    "down_block_types": ["DownEncoderBlock2D"] * 4,  # vae/config.json
    "up_block_types": ["UpDecoderBlock2D"] * 4,  # vae/config.json
    "act_fn": "silu",  # vae/config.json
    "norm_num_groups": 32,  # vae/config.json
    "mid_block_add_attention": True,  # vae/config.json
    "scaling_factor": 0.3611,  # vae/config.json
    "shift_factor": 0.1159,  # vae/config.json
    "use_quant_conv": False,  # vae/config.json
    "use_post_quant_conv": False,  # vae/config.json
    "force_upcast": True,  # vae/config.json
    "sample_size": 1024,  # vae/config.json
}

# scheduler/scheduler_config.json: a static shift of 3 (the loader tells Turbo by this file).
SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,  # scheduler/scheduler_config.json
    "shift": 3.0,  # scheduler/scheduler_config.json
    "use_dynamic_shifting": False,  # scheduler/scheduler_config.json
}

# tokenizer/tokenizer_config.json (Qwen3's): the specials the pipeline pads and stops with.
TOKENIZER: dict[str, Any] = {
    "eos_token": "<|im_end|>",  # tokenizer_config.json
    "pad_token": "<|endoftext|>",  # tokenizer_config.json: ZImagePipeline pads prompts to 512 with it
    "bos_token": None,  # tokenizer_config.json
    "unk_token": None,  # tokenizer_config.json
    "model_max_length": 131072,  # tokenizer_config.json
    "clean_up_tokenization_spaces": False,  # tokenizer_config.json
}

# Qwen3's added tokens after the 151,643 BPE ranks, at their ids (tokenizer.json "added_tokens"); the
# flag is tokenizer_config.json's "special" (tool, FIM and think markers are added but not special).
ADDED_TOKENS: tuple[tuple[int, str, bool], ...] = tuple(
    (151643 + i, content, i < 14)
    for i, content in enumerate((
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
        "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
        "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
        "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>",
        "</tool_response>", "<think>", "</think>",
    ))
)
BPE_RANKS = 151643  # Qwen's byte-level BPE vocabulary (qwen.tiktoken), before the added tokens

# The small variant's changes; everything not named here is the real value.
SMALL_TEXT_HIDDEN = 128
SMALL_TRANSFORMER = {
    "dim": 256,  # 2 heads x 128: ZImageTransformer2DModel asserts dim // n_heads == sum(axes_dims)
    "n_heads": 2,
    "n_kv_heads": 2,
    "n_layers": 2,
    "cap_feat_dim": SMALL_TEXT_HIDDEN,
}
SMALL_TEXT_ENCODER = {
    "hidden_size": SMALL_TEXT_HIDDEN,
    "num_hidden_layers": 2,  # the pipeline reads hidden_states[-2]: the first layer's output
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # keeps grouped-query attention (2 queries per key/value head)
    "head_dim": 32,
    "intermediate_size": 256,
}
SMALL_VAE = {
    "block_out_channels": [32, 32, 64, 64],  # four levels keep the 8x downscale; multiples of 32 groups
    "layers_per_block": 1,
}


@dataclass(frozen=True)
class TurboConfig:
    """The constructor arguments of each component (fresh copies: callers may change them)."""

    transformer: dict[str, Any]
    text_encoder: dict[str, Any]
    vae: dict[str, Any]
    scheduler: dict[str, Any]
    tokenizer: dict[str, Any]


def turbo_config(small: bool = False) -> TurboConfig:
    """Z-Image Turbo's configuration, or (small) the CPU-test variant with the same interfaces."""
    config = TurboConfig(*(copy.deepcopy(c) for c in (TRANSFORMER, TEXT_ENCODER, VAE, SCHEDULER, TOKENIZER)))
    if small:
        config.transformer.update(copy.deepcopy(SMALL_TRANSFORMER))
        config.text_encoder.update(copy.deepcopy(SMALL_TEXT_ENCODER))
        config.vae.update(copy.deepcopy(SMALL_VAE))
    return config
