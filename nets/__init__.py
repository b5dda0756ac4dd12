"""Models built from tinyhw.nn: highway layers, the character-aware LM, ResNet/Highway conv nets."""
