"""Speed: steps, servers and batching, timed side by side in one run."""
