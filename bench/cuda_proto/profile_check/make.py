import lutc, sys
from lutc.frontend.llama import LlamaSpec, build_llama, random_llama_weights
spec = LlamaSpec(vocab_size=71, hidden_size=64, intermediate_size=80, num_layers=3, num_heads=4, num_kv_heads=2, max_positions=48)
g = build_llama(spec, random_llama_weights(spec, seed=5), kv_cache=True, last_logits=True)
cm = lutc.compile(g, target="cuda", quant=lutc.QuantConfig(bits=3, group_size=32, exclude=()))
cm.save("build/prof_cuda/model")
ref = lutc.compile(g, target="reference", quant=lutc.QuantConfig(bits=3, group_size=32, exclude=()))
print(ref.generate([5, 9, 2, 6], 7).tokens)
