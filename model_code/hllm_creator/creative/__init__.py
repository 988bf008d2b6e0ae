"""The creative contract shared by teacher, train, infer, serving and evaluation (issue 11): the ad
record (``creative.ad``), Unicode normalization (``creative.text``), the grounding gate
(``creative.grounding.gate``; ``creative.check.title_reasons`` is the one call sites use), fact phrases,
framed prompts, title cleaning, the copy test (``creative.copy``) and the evaluation hold-out."""
