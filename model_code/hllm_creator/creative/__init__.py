"""The creative contract shared by teacher, train, infer and serving (issue 11): the ad record
(``creative.ad``), Unicode normalization (``creative.text``), the grounding gate
(``creative.grounding.gate``; ``creative.check.title_reasons`` is the one call sites use), fact phrases,
framed prompts, title cleaning and the evaluation hold-out."""
