"""The creative contract shared by teacher, train, infer, serving and evaluation: the ad record
(``creative.ad``), Unicode normalization (``creative.text``), the words (``creative.words``: the one
stop set and stemmer), the grounding gate (``creative.gate.gate``, one module per rule family), fact
phrases and compositions (``creative.facts``), framed prompts, title cleaning (``creative.titles``), the
copy test (``creative.copy``) and the evaluation hold-out (``creative.holdout``)."""
