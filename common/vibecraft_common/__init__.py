"""What the operator, renderer and API share: the MusicVideo resource's identity and the env contract."""
