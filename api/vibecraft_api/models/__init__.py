"""Request and response models, split by use (`VideoCreate` in, `VideoPublic` out)."""
