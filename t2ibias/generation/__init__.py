"""Generators: specs (one YAML file per id), the diffusers adapter, and tiny offline builders."""
