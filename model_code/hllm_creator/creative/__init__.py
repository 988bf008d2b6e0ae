"""The creative contract shared by teacher, train, infer and serving (issue 11).

- ``creative.ad``: the ad record ``Ad`` (the only allowed source of facts);
- ``creative.text``: ``normalize_text`` (Unicode normalization applied before every check) and ``scripts_of``;
- ``creative.grounding``: the grounding gate ``gate(title, ad, ...)`` and ``check_grounding``.
"""
