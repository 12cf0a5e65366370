"""Wire formats: msgspec message types, decoders and encoders, created once at import."""
