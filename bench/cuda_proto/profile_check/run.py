from lutc.runtime import load
rt = load("build/prof_cuda/model")
plain = rt.generate([5, 9, 2, 6], 7).tokens
with rt.profile() as prof:
    prof_tokens = rt.generate([5, 9, 2, 6], 7).tokens
after = rt.generate([5, 9, 2, 6], 7).tokens
print("tokens", plain, prof_tokens, after, plain == prof_tokens == after)
rep = prof.report()
print({k: (v["calls"], len(v["rows"])) for k, v in rep.items()})
print(prof.table())
