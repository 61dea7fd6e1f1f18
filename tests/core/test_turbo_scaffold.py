"""`zerase scaffold z-image-turbo`: Z-Image Turbo's configs and Qwen3's tokenizer, random weights."""

from __future__ import annotations

import inspect
import json
import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
from safetensors.torch import load_file
from transformers import AutoTokenizer, Qwen3Config
from typer.testing import CliRunner

from cli.main import app as console_app
from zerase.model.captions import CaptionTokens
from zerase.model.pipeline import encode_prompts, load_pipeline
from zerase.model.profiles import PROFILE_FILE, profile_for
from zerase.turbo.config import ADDED_TOKENS, MODEL_INDEX, SCHEDULER, TEXT_ENCODER, TRANSFORMER, VAE, turbo_config
from zerase.turbo.scaffold import parameter_counts
from zerase.turbo.tokenizer import qwen_ranks_file

Scaffold = Callable[..., Path]
PROMPTS = ["a photo of Taylor Swift on stage", "Claude Monet, water lilies", "年轻的中国女性，身穿红色汉服"]


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def pipes(turbo_scaffold: Scaffold) -> Callable[[str], ZImagePipeline]:
    loaded: dict[str, ZImagePipeline] = {}

    def pipe(dtype: str) -> ZImagePipeline:
        if dtype not in loaded:
            loaded[dtype] = load_pipeline(turbo_scaffold(dtype), dtype=getattr(torch, dtype))
        return loaded[dtype]

    return pipe


@pytest.fixture(scope="module")
def tok(turbo_scaffold: Scaffold):
    return AutoTokenizer.from_pretrained(str(turbo_scaffold() / "tokenizer"))


def test_full_size_config_is_turbos_published_one():
    # Tongyi-MAI/Z-Image-Turbo transformer/, text_encoder/ (Qwen3-4B), vae/ (FLUX.1), scheduler/ configs.
    assert TRANSFORMER == {
        "all_patch_size": [2], "all_f_patch_size": [1], "in_channels": 16, "dim": 3840, "n_layers": 30,
        "n_refiner_layers": 2, "n_heads": 30, "n_kv_heads": 30, "norm_eps": 1e-5, "qk_norm": True,
        "cap_feat_dim": 2560, "rope_theta": 256.0, "t_scale": 1000.0, "axes_dims": [32, 48, 48],
        "axes_lens": [1536, 512, 512]}
    assert {k: TEXT_ENCODER[k] for k in (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
        "intermediate_size", "vocab_size", "tie_word_embeddings", "rms_norm_eps", "rope_theta",
        "max_position_embeddings", "hidden_act", "bos_token_id", "eos_token_id")} == {
        "hidden_size": 2560, "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "intermediate_size": 9728, "vocab_size": 151936, "tie_word_embeddings": True,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000, "max_position_embeddings": 40960, "hidden_act": "silu",
        "bos_token_id": 151643, "eos_token_id": 151645}
    assert VAE == {
        "in_channels": 3, "out_channels": 3, "latent_channels": 16, "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2, "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4, "act_fn": "silu", "norm_num_groups": 32,
        "mid_block_add_attention": True, "scaling_factor": 0.3611, "shift_factor": 0.1159,
        "use_quant_conv": False, "use_post_quant_conv": False, "force_upcast": True, "sample_size": 1024}
    assert SCHEDULER == {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False}
    full = turbo_config(small=False)
    assert (full.transformer, full.text_encoder, full.vae, full.scheduler) == (TRANSFORMER, TEXT_ENCODER, VAE,
                                                                               SCHEDULER)


def test_configs_name_exactly_the_constructors_arguments():
    transformer_args = set(inspect.signature(ZImageTransformer2DModel.__init__).parameters) - {"self"}
    assert set(TRANSFORMER) == transformer_args - {"siglip_feat_dim"}  # the Omni variant's, unset in Turbo
    assert set(VAE) <= set(inspect.signature(AutoencoderKL.__init__).parameters)
    assert set(SCHEDULER) <= set(inspect.signature(FlowMatchEulerDiscreteScheduler.__init__).parameters)
    text = Qwen3Config(**TEXT_ENCODER)
    assert text.rope_parameters["rope_theta"] == TEXT_ENCODER["rope_theta"]
    assert all(getattr(text, k) == v for k, v in TEXT_ENCODER.items() if k != "rope_theta")


def test_full_size_parameter_counts():
    # On the meta device: nothing is allocated. 6,154,908,736 is also the count read off Turbo's checkpoint.
    assert parameter_counts(small=False) == {"transformer": 6_154_908_736, "text_encoder": 4_022_468_096,
                                             "vae": 83_819_683}


def test_small_scaffold_keeps_turbos_interfaces(turbo_scaffold: Scaffold):
    out = turbo_scaffold()
    assert not (out / PROFILE_FILE).exists()  # a downloaded Turbo has none: it is told by its scheduler
    assert profile_for(out).name == "z-image-turbo"
    index = _json(out / "model_index.json")
    assert index["_class_name"] == "ZImagePipeline"
    assert {k: tuple(index[k]) for k in MODEL_INDEX} == MODEL_INDEX

    transformer = _json(out / "transformer" / "config.json")
    text = _json(out / "text_encoder" / "config.json")
    vae = _json(out / "vae" / "config.json")
    for key in ("all_patch_size", "all_f_patch_size", "in_channels", "axes_dims", "axes_lens", "rope_theta",
                "t_scale", "qk_norm", "norm_eps"):
        assert transformer[key] == TRANSFORMER[key], key
    assert transformer["dim"] // transformer["n_heads"] == sum(TRANSFORMER["axes_dims"]) == 128
    assert transformer["cap_feat_dim"] == text["hidden_size"] < TEXT_ENCODER["hidden_size"]
    for key in ("vocab_size", "tie_word_embeddings", "bos_token_id", "eos_token_id", "rms_norm_eps"):
        assert text[key] == TEXT_ENCODER[key], key
    assert text["rope_parameters"]["rope_theta"] == TEXT_ENCODER["rope_theta"]
    for key in ("latent_channels", "down_block_types", "up_block_types", "scaling_factor", "shift_factor",
                "use_quant_conv", "use_post_quant_conv", "force_upcast"):
        assert vae[key] == VAE[key], key
    assert len(vae["block_out_channels"]) == 4  # the real 8x downscale
    scheduler = _json(out / "scheduler" / "scheduler_config.json")
    assert {k: scheduler[k] for k in SCHEDULER} == SCHEDULER


def test_tokenizer_is_qwens_vocabulary(tok):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    assert type(tok).__name__ == "Qwen2Tokenizer"
    assert tok.backend_tokenizer.get_vocab_size(with_added_tokens=False) == 151_643
    assert len(tok) == 151_669
    assert [tok.convert_tokens_to_ids(c) for _, c, _ in ADDED_TOKENS] == list(range(151_643, 151_669))
    # Special as in Qwen3's tokenizer_config.json: up to <|video_pad|>; tool, FIM and think markers are not.
    assert [tok.added_tokens_decoder[i].special for i in range(151_643, 151_669)] == [True] * 14 + [False] * 12
    assert tok("<|im_start|>").input_ids == [151644]
    assert tok("Hello world").input_ids == [9707, 1879]  # as Qwen's own tokenizer
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token, tok.pad_token_id) == ("<|im_end|>", 151645,
                                                                                  "<|endoftext|>", 151643)
    assert tok.model_max_length == 131072
    assert tok("caf\u0065\u0301").input_ids == tok("caf\u00e9").input_ids  # NFC
    # The same ids as the ranks encoded by tiktoken itself (the reference Qwen's original tokenizer used).
    reference = tiktoken.Encoding("qwen", pat_str=PRETOKENIZE_REGEX, special_tokens={},
                                  mergeable_ranks=load_tiktoken_bpe(str(qwen_ranks_file())))
    texts = [*PROMPTS, " Taylor Swift", "Ünïcödé — “quotes” 3.14159", "  spaces\n\n\ttabs\r\n", "👩‍👩‍👧 🏳️‍🌈",
             "def f(x):\n    return x**2", "Привет мир, こんにちは世界, 안녕하세요"]
    for text in texts:
        assert tok(text).input_ids == reference.encode(unicodedata.normalize("NFC", text)), text


def test_chat_template_renders_as_qwen3s(tok):
    prompt = "a red apple"
    user = [{"role": "user", "content": prompt}]
    head = "<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n"

    def render(messages: list[dict[str, str]], **kwargs: bool) -> str:
        return tok.apply_chat_template(messages, tokenize=False, **kwargs)

    assert render(user, add_generation_prompt=True, enable_thinking=True) == head
    assert render(user, add_generation_prompt=True) == head
    assert render(user, add_generation_prompt=True, enable_thinking=False) == head + "<think>\n\n</think>\n\n"
    chat = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
            {"role": "assistant", "content": "A"}]
    assert render(chat) == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n" \
                           "<|im_start|>assistant\nA<|im_end|>\n"


def test_caption_counter_agrees_with_the_pipeline(turbo_scaffold: Scaffold, pipes):
    counter = CaptionTokens(turbo_scaffold() / "tokenizer")
    pipe = pipes("float32")
    embeds = encode_prompts(pipe, PROMPTS)
    for prompt, embed in zip(PROMPTS, embeds, strict=True):
        templated = pipe.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                       add_generation_prompt=True, enable_thinking=True)
        assert counter.templated(prompt) == templated
        assert counter.count(prompt) == len(pipe.tokenizer(templated).input_ids) == embed.shape[0]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_loads_and_generates_finite_images(pipes, dtype: str):
    pipe = pipes(dtype)
    assert {part.dtype for part in (pipe.transformer, pipe.text_encoder, pipe.vae)} == {getattr(torch, dtype)}
    images = pipe(PROMPTS[:2], height=64, width=64, num_inference_steps=2, guidance_scale=0.0, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 64, 64, 3)
    assert np.isfinite(images).all() and images.std() > 0


def test_cli_writes_the_same_scaffold(turbo_scaffold: Scaffold, tmp_path: Path):
    out = tmp_path / "turbo"
    result = CliRunner().invoke(console_app, ["scaffold", "z-image-turbo", "--out", str(out), "--small",
                                              "--dtype", "float32", "--seed", "0"])
    assert result.exit_code == 0, result.output
    assert "transformer" in result.output and "parameters" in result.output and "MiB" in result.output
    reference = turbo_scaffold("float32")
    for part in ("transformer/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        ours, theirs = load_file(out / part), load_file(reference / part)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), part
    assert (out / "tokenizer" / "tokenizer.json").read_bytes() == (reference / "tokenizer" /
                                                                  "tokenizer.json").read_bytes()
