"""The base both packages stand on: errors, file writing, the registry, YAML with line numbers,
fingerprints, safe loading of weights, devices and paths. It imports nothing of t2ibias above it."""
