"""Tiny random Llamas with an offline BPE tokenizer: real HF folders that load and merge in milliseconds."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Question: What is two plus two? Answer: four.",
    "Merging language models is fun and cheap.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
] * 20
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def make_tokenizer(folder: Path, extra_tokens: list[str] | None = None) -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(CORPUS, trainer)
    bpe.add_tokens(extra_tokens or [])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    tok.chat_template = CHATML
    tok.save_pretrained(folder)
    return tok


def edit_config(folder: Path, **changes) -> None:
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


FAMILIES = {
    "llama": ("LlamaConfig", {}),
    "mistral": ("MistralConfig", {"sliding_window": None}),
    "gemma2": ("Gemma2Config", {"head_dim": 16, "query_pre_attn_scalar": 16}),
    "mixtral": ("MixtralConfig", {"num_local_experts": 2, "num_experts_per_tok": 1}),
}


def make_tiny(
    folder: Path,
    family: str = "llama",
    layers: int = 4,
    seed: int = 0,
    hidden: int = 64,
    tied: bool = True,
    extra_tokens: list[str] | None = None,
    pickle: bool = False,
    perturb_norms: bool = True,
) -> Path:
    """A tiny random model of a transformers family (llama, mistral, gemma2, mixtral), with the tiny tokenizer.
    `perturb_norms`: norm weights differ between models, as in real fine-tunes (fresh ones are all equal)."""
    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder, extra_tokens)
    name, extra = FAMILIES[family]
    config = getattr(transformers, name)(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tied,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **extra,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    if perturb_norms:
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() == 1:
                    param.add_(torch.randn_like(param) * 0.05)
    if pickle:
        config.architectures = [type(model).__name__]
        config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    else:
        model.save_pretrained(folder, safe_serialization=True)
    return folder


def make_tiny_llama(folder: Path, seed: int = 0, layers: int = 4, **options) -> Path:
    """The tiny Llama most tests use (fresh norms, as before the corpus needed perturbed ones)."""
    return make_tiny(folder, "llama", layers=layers, seed=seed, perturb_norms=False, **options)


def make_tiny_lora(folder: Path, base: Path, seed: int = 0, rank: int = 4) -> Path:
    """A tiny peft LoRA adapter for `base`, with random (non-zero) B matrices so merging it changes the weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    peft_model.save_pretrained(folder)
    return Path(folder)
