"""Benchmarks and analyses of the project (not installed): ``speed/`` times the steps and servers,
``quality/`` measures what the models and rules achieve, ``gpu/`` is the check for a lent GPU.
``python -m benchmarks`` runs the quick ones (``make bench``)."""
