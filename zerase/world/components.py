"""The tiny pipeline's parts, built from diffusers' and transformers' own classes.

Every part has the same class as in Z-Image Turbo; only the sizes differ, so the tiny model
loads through `ZImagePipeline.from_pretrained` exactly like the real one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImageTransformer2DModel
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

# Qwen-style template: the pipeline calls apply_chat_template(..., enable_thinking=True).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)


@dataclass(frozen=True)
class WorldSizes:
    """Sizes of the tiny pipeline (see the README's table for why each was chosen)."""

    image_size: int = 32
    text_hidden: int = 64
    text_layers: int = 2
    vae_channels: tuple[int, ...] = (32, 64, 64)  # three levels: 4x downscale, 32x32 -> 8x8 latents
    latent_channels: int = 4
    dim: int = 128
    n_layers: int = 4
    n_refiner_layers: int = 1
    n_heads: int = 4
    axes_dims: tuple[int, int, int] = (8, 12, 12)  # sums to dim / n_heads
    vocab_size: int = 480


def build_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained offline on the world's captions: any string, misspelt or not, tokenizes."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=512,
        padding_side="right",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_text_encoder(sizes: WorldSizes, vocab_size: int) -> Qwen3Model:
    """A tiny Qwen3 text encoder. It stays at its seeded random init: the transformer learns to read it."""
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=sizes.text_hidden,
        intermediate_size=sizes.text_hidden * 2,
        num_hidden_layers=sizes.text_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=sizes.text_hidden // 4,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
    )
    model = Qwen3Model(config)
    return model.eval().requires_grad_(False)


def build_vae(sizes: WorldSizes) -> AutoencoderKL:
    n = len(sizes.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=sizes.vae_channels,
        layers_per_block=1,
        latent_channels=sizes.latent_channels,
        norm_num_groups=16,
        sample_size=sizes.image_size,
        mid_block_add_attention=False,
    )


def build_transformer(sizes: WorldSizes) -> ZImageTransformer2DModel:
    return ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=sizes.latent_channels,
        dim=sizes.dim,
        n_layers=sizes.n_layers,
        n_refiner_layers=sizes.n_refiner_layers,
        n_heads=sizes.n_heads,
        n_kv_heads=sizes.n_heads,
        cap_feat_dim=sizes.text_hidden,
        axes_dims=list(sizes.axes_dims),
        # axes_lens[0] bounds caption length plus image offset; long prompts are truncated to 512.
        axes_lens=[1024, 64, 64],
    )


def build_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Z-Image Turbo's scheduler settings: static shift 3."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)
