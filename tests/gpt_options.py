"""The GPT's two architecture options, every combination: GPT-2's (learned, tied), the seed
texts' (sinusoidal, untied) and the two mixes.  Tests parametrize over OPTIONS with OPTION_IDS."""
OPTIONS = [dict(position_embedding=p, tie_word_embeddings=t) for p in ("learned", "sinusoidal") for t in (True, False)]
OPTION_IDS = [f"{o['position_embedding']}-{'tied' if o['tie_word_embeddings'] else 'untied'}" for o in OPTIONS]
