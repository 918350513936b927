"""Registration of the lexical and length families (kept apart so listing metrics imports neither
sacreBLEU nor NLTK)."""

from collapselab.metrics.base import register_metric

_LEXICAL = "collapselab.metrics.lexical"

register_metric("lexical_diversity", family="lexical", higher_is_better=True,
                description="100 − Self-BLEU (sacreBLEU, order 3, effective order; sentences ≥ 4 words); "
                            "settings: mode=individual|aggregated, max_order=3, sample=100 (0 = all), seed=0",
                # 2: the jackknife keeps aggregated mode's sample fixed across replicates
                module=_LEXICAL, factory="LexicalDiversity", version=3, range=(0, 100))
# 3: intervals on a range-respecting scale
register_metric("distinct", family="lexical", higher_is_better=True,
                description="distinct n-grams / total n-grams (Li et al. 2016); settings: n=2, "
                            "token_budget (length-matched corpus value), seed",
                module=_LEXICAL, factory="Distinct", range=(0, 1), ranges={"budget_tokens": (0, None)},
                version=2)  # 2: intervals
register_metric("compression_ratio", family="lexical", higher_is_better=False,
                description="raw / zlib-compressed size of the joined texts (Shaib et al. 2024); "
                            "higher = more redundant",
                module=_LEXICAL, factory="CompressionRatio", range=(0, None), version=2)  # 2: intervals
register_metric("ngram_entropy", family="lexical", higher_is_better=True,
                description="Shannon entropy (bits) of the n-gram distribution; settings: n=2, "
                            "token_budget (length-matched corpus value), seed",
                module=_LEXICAL, factory="NgramEntropy", range=(0, None), version=2)  # 2: intervals
register_metric("mattr", family="lexical", higher_is_better=True,
                description="moving-average type-token ratio (Covington & McFall 2010); setting: window=50",
                module=_LEXICAL, factory="Mattr", range=(0, 1))
register_metric("length", family="length", higher_is_better=None,
                description="words (NLTK tokens with a letter or digit) and sentences per response",
                module="collapselab.metrics.length", factory="Length", range=(0, None))
