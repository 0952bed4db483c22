"""The training methods: their registry, objectives, losses, hard negatives, IG's step and the
popularity scorer."""
